import assert from "node:assert/strict";
import { parseDuration } from "./duration.ts";
import { parsePolicy } from "./loader.ts";
import { resolveLayers } from "./resolve.ts";

Deno.test("parseDuration() reads ms, s, m, h and combinations", () => {
  assert.equal(parseDuration("500ms"), 500);
  assert.equal(parseDuration("30s"), 30_000);
  assert.equal(parseDuration("1.5s"), 1500);
  assert.equal(parseDuration("10m"), 600_000);
  assert.equal(parseDuration("1h"), 3_600_000);
  assert.equal(parseDuration("1m30s"), 90_000);
});

Deno.test("parseDuration() refuses what is not a duration, and zero", () => {
  for (const bad of ["", "30", "s", "-1s", "1 s", "1d", "0s", "10 minutes"]) {
    assert.throws(() => parseDuration(bad), RangeError, bad);
  }
});

Deno.test("a policy's pause section is validated at load, with the line of a bad duration", () => {
  const policy = parsePolicy("pause:\n  timeout: 10m\n  on_timeout: resume\n", "p.yaml");
  const resolved = resolveLayers([{ source: "p.yaml", policy }]);
  assert.deepEqual(resolved.pause, { timeout: "10m", on_timeout: "resume" });
  assert.deepEqual(resolveLayers([{ source: "e", policy: {} }]).pause, {
    timeout: null,
    on_timeout: "kill",
  });
  assert.throws(
    () => parsePolicy("pause:\n  timeout: 10 minutes\n", "p.yaml"),
    /p\.yaml:2:12: field "pause\.timeout": expected a duration such as 500ms/,
  );
  assert.throws(
    () => parsePolicy("pause:\n  on_timeout: stop\n", "p.yaml"),
    /p\.yaml:2:15: field "pause\.on_timeout"/,
  );
});
