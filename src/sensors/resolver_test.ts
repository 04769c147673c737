import assert from "node:assert/strict";
import { HostResolver, type ResolveFn } from "./resolver.ts";

/** A resolver that never answers, as a DNS server that drops every query; counts its calls. */
function silent(): { resolve: ResolveFn; calls: string[] } {
  const calls: string[] = [];
  return { calls, resolve: (name) => (calls.push(name), new Promise(() => {})) };
}

const answers: ResolveFn = (name) =>
  Promise.resolve(name === "db.internal" ? [{ address: "10.0.0.7", ttl: 30 }] : []);

Deno.test("HostResolver.start() returns at once when the DNS server never answers", async () => {
  const { resolve, calls } = silent();
  const resolver = new HostResolver({ names: ["a.example", "b.example"], resolve });
  const ac = new AbortController();
  const t0 = performance.now();
  await resolver.start(ac.signal);
  const took = performance.now() - t0;
  ac.abort();
  assert.ok(took < 50, `start() took ${took} ms`);
  assert.deepEqual(calls.sort(), ["a.example", "b.example"]);
});

Deno.test("HostResolver names a lookup that times out as unresolved", async () => {
  const { resolve } = silent();
  const resolver = new HostResolver({
    names: ["b.example", "a.example"],
    resolve,
    lookupTimeoutMs: 30,
  });
  assert.deepEqual(resolver.pending(), ["a.example", "b.example"]);
  const t0 = performance.now();
  await resolver.refresh();
  const took = performance.now() - t0;
  assert.ok(took < 1000, `refresh() took ${took} ms with a 30 ms bound`);
  assert.deepEqual(resolver.unresolved(), ["a.example", "b.example"]);
  assert.deepEqual(resolver.pending(), []);
  assert.equal(resolver.failures, 2);
});

Deno.test("HostResolver abandons running lookups on abort, without counting them failed", async () => {
  const { resolve } = silent();
  const resolver = new HostResolver({ names: ["a.example"], resolve, lookupTimeoutMs: 60_000 });
  const ac = new AbortController();
  const refreshing = resolver.refresh(ac.signal);
  ac.abort();
  const t0 = performance.now();
  await refreshing;
  assert.ok(performance.now() - t0 < 50);
  assert.deepEqual(resolver.unresolved(), []);
  assert.deepEqual(resolver.pending(), ["a.example"]);
});

Deno.test("HostResolver maps answered names and lists the failed ones apart", async () => {
  const resolver = new HostResolver({
    names: ["db.internal", "gone.example"],
    resolve: (name) =>
      name === "gone.example" ? Promise.reject(new Error("ENOTFOUND")) : answers(name),
    now: () => 1_000_000,
  });
  await resolver.refresh();
  assert.deepEqual(resolver.namesFor("10.0.0.7"), ["db.internal"]);
  assert.deepEqual(resolver.unresolved(), ["gone.example"]);
  assert.deepEqual([...resolver.addresses()], [["db.internal", ["10.0.0.7"]]]);
});

Deno.test("HostResolver forgets a failure once the name resolves", async () => {
  let up = false;
  let now = 0;
  const resolver = new HostResolver({
    names: ["db.internal"],
    resolve: (name) => up ? answers(name) : Promise.reject(new Error("ENOTFOUND")),
    retrySeconds: 1,
    now: () => now,
  });
  await resolver.refresh();
  assert.deepEqual(resolver.unresolved(), ["db.internal"]);
  up = true;
  now = 2000;
  await resolver.refresh();
  assert.deepEqual(resolver.unresolved(), []);
  assert.deepEqual(resolver.namesFor("10.0.0.7"), ["db.internal"]);
});
