import assert from "node:assert/strict";
import { loadPolicy, type ResolvedPolicy } from "../policy/mod.ts";
import { modeCeiling } from "./mode_notice.ts";

async function policy(yaml: string): Promise<ResolvedPolicy> {
  return await loadPolicy("/p.yaml", { readFile: () => Promise.resolve(yaml) });
}

Deno.test("modeCeiling() says a kill mode no risk reaches, and what Sentry does instead", async () => {
  const bare = await policy("name: b\nextends: none\nmode: kill\n");
  assert.match(
    modeCeiling(bare) ?? "",
    /^mode kill is never reached: thresholds\.kill is 101.* the most Sentry does is rollback \(at risk 85\)/,
  );
  const low = await policy("name: b\nextends: none\nmode: kill\nthresholds: { rollback: 101 }\n");
  assert.match(modeCeiling(low) ?? "", /the most Sentry does is pause \(at risk 60\)/);
});

Deno.test("modeCeiling() names the rules that still kill when the threshold is off", async () => {
  const strictish = await policy("name: d\nmode: kill\n");
  assert.match(
    modeCeiling(strictish) ?? "",
    /^mode kill: thresholds\.kill is 101.*only the rules that ask for kill \(reverse_shell, .*\) kill/,
  );
});

Deno.test("modeCeiling() says nothing when the mode is within reach, or not threshold-chosen", async () => {
  assert.equal(modeCeiling(await policy("name: k\nmode: kill\nthresholds: { kill: 95 }\n")), null);
  assert.equal(modeCeiling(await policy("name: p\nmode: pause\n")), null);
  assert.equal(modeCeiling(await policy("name: a\nmode: alert\n")), null);
  assert.equal(modeCeiling(await policy("name: m\nmode: monitor\n")), null);
  assert.equal(modeCeiling(await loadPolicy("strict")), null);
});
