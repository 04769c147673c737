import assert from "node:assert/strict";
import { UsageError } from "./errors.ts";
import { inWindow, parseTimeArg, parseWindow } from "./time_window.ts";

const NOW = Date.parse("2026-12-06T12:00:00.000Z");

Deno.test("parseTimeArg() reads a duration as that long before now", () => {
  const at = (text: string) => parseTimeArg(text, { flag: "--since", now: NOW });
  assert.equal(at("2h"), "2026-12-06T10:00:00.000Z");
  assert.equal(at("30m"), "2026-12-06T11:30:00.000Z");
  assert.equal(at("1d"), "2026-12-05T12:00:00.000Z");
  assert.equal(at("1w"), "2026-11-29T12:00:00.000Z");
  assert.equal(at("1h30m"), "2026-12-06T10:30:00.000Z");
  assert.equal(at("500ms"), "2026-12-06T11:59:59.500Z");
});

Deno.test("parseTimeArg() reads ISO times, local without an offset", () => {
  const at = (text: string) => parseTimeArg(text, { flag: "--since", now: NOW });
  assert.equal(at("2026-12-06T14:30:00Z"), "2026-12-06T14:30:00.000Z");
  assert.equal(at("2026-12-06T14:30:00+02:00"), "2026-12-06T12:30:00.000Z");
  assert.equal(at("2026-12-06T14:30"), new Date(2026, 11, 6, 14, 30).toISOString());
  assert.equal(at("2026-12-06 14:30"), new Date(2026, 11, 6, 14, 30).toISOString());
  assert.equal(at("2026-12-06"), new Date(2026, 11, 6).toISOString());
});

Deno.test("parseTimeArg() refuses what is neither, naming the flag", () => {
  for (const bad of ["yesterday", "", "2h ago", "-2h", "2026-13-45", "12:00", "2x"]) {
    assert.throws(
      () => parseTimeArg(bad, { flag: "--until", now: NOW }),
      (e: unknown) => e instanceof UsageError && e.message.startsWith(`Invalid --until "${bad}"`),
      bad,
    );
  }
});

Deno.test("parseWindow() refuses an empty window and inWindow() is since-inclusive, until-exclusive", () => {
  assert.throws(() => parseWindow({ since: "1h", until: "2h" }, NOW), UsageError);
  const w = parseWindow({ since: "2h", until: "1h" }, NOW);
  assert.deepEqual(w, { since: "2026-12-06T10:00:00.000Z", until: "2026-12-06T11:00:00.000Z" });
  assert.equal(inWindow("2026-12-06T10:00:00.000Z", w), true);
  assert.equal(inWindow("2026-12-06T11:00:00.000Z", w), false);
  assert.equal(inWindow("2026-12-06T09:59:59.999Z", w), false);
  assert.equal(inWindow("2000-01-01T00:00:00.000Z", {}), true);
});
