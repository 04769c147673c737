import assert from "node:assert/strict";
import { type KernelTier, openTier, type Tier, TierError, tierOrder } from "./tiers.ts";

function fake(tier: Exclude<Tier, "poll">): KernelTier {
  return {
    tier,
    covers: { files: true, network: tier !== "fanotify", processes: true, exits: true },
    sensors: () => [],
    track() {},
    ready: () => Promise.resolve(),
    close() {},
  };
}

function failing(reason: string): () => KernelTier {
  return () => {
    throw new Error(reason);
  };
}

Deno.test("tierOrder() tries seccomp only for run, and poll last", () => {
  assert.deepEqual(tierOrder("run"), ["ebpf", "seccomp", "fanotify", "poll"]);
  assert.deepEqual(tierOrder("attach"), ["ebpf", "fanotify", "poll"]);
});

Deno.test("openTier(auto) takes the most exact tier that opens and says why it passed the others", async () => {
  const opened = await openTier("auto", {
    kind: "run",
    openers: {
      ebpf: failing("Cannot load the eBPF program: errno 1"),
      seccomp: () => fake("seccomp"),
    },
  });
  assert.equal(opened.name, "seccomp");
  assert.equal(opened.tier?.tier, "seccomp");
  assert.deepEqual(opened.skipped, [{
    tier: "ebpf",
    reason: "Cannot load the eBPF program: errno 1",
  }]);
});

Deno.test("openTier(auto) falls back to poll when no kernel tier opens", async () => {
  const opened = await openTier("auto", {
    kind: "attach",
    openers: { ebpf: failing("no BTF"), fanotify: failing("it needs root") },
  });
  assert.equal(opened.name, "poll");
  assert.equal(opened.tier, null);
  assert.deepEqual(opened.skipped.map((s) => s.tier), ["ebpf", "fanotify"]);
});

Deno.test("openTier() of a named tier the host refuses is an error naming the reason", async () => {
  await assert.rejects(
    () => openTier("ebpf", { kind: "run", openers: { ebpf: failing("errno 1 (needs root)") } }),
    (e: unknown) =>
      e instanceof TierError && e.message === "Cannot use --sensor ebpf: errno 1 (needs root)",
  );
  await assert.rejects(
    () => openTier("seccomp", { kind: "attach", openers: { seccomp: () => fake("seccomp") } }),
    (e: unknown) => e instanceof TierError && /only for sentry run, not attach/.test(e.message),
  );
});

Deno.test("openTier(poll) always works and opens nothing", async () => {
  const opened = await openTier("poll", {
    kind: "attach",
    openers: { ebpf: failing("never called") },
  });
  assert.equal(opened.name, "poll");
  assert.deepEqual(opened.skipped, []);
});
