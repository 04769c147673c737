import assert from "node:assert/strict";
import { parseLastAudit, resolveWindow, SETTLE_MS } from "./mod.ts";

const NOW = Date.UTC(2026, 5, 1, 10, 0, 0);
const iso = (ms: number) => new Date(ms).toISOString();

Deno.test("resolveWindow() follows the watermark, settles a second behind the clock, and leaves it for flags", () => {
  assert.deepEqual(resolveWindow({ now: NOW }), {
    since: null,
    until: iso(NOW - SETTLE_MS),
    source: "first",
    advances: true,
  });
  const mark = iso(NOW - 3_600_000);
  assert.deepEqual(resolveWindow({ now: NOW, watermark: mark }), {
    since: mark,
    until: iso(NOW - SETTLE_MS),
    source: "watermark",
    advances: true,
  });
  // The audit's own watches end later than the settle time: the window takes them in.
  assert.equal(resolveWindow({ now: NOW, notBefore: NOW + 5 }).until, iso(NOW + 5));
  const flags = resolveWindow({ now: NOW, watermark: mark, since: iso(NOW - 7_200_000) });
  assert.equal(flags.since, iso(NOW - 7_200_000));
  assert.equal(flags.source, "flags");
  assert.equal(flags.advances, false);
  assert.throws(
    () => resolveWindow({ now: NOW, since: iso(NOW), until: iso(NOW - 1) }),
    RangeError,
  );
  // A clock set back behind the watermark covers nothing rather than the past again.
  const ahead = iso(NOW + 60_000);
  const back = resolveWindow({ now: NOW, watermark: ahead });
  assert.equal(back.since, ahead);
  assert.equal(back.until, ahead);
});

Deno.test("parseLastAudit() reads what the audit stores, and null for anything else", () => {
  const last = {
    at: iso(NOW),
    since: null,
    until: iso(NOW),
    result: "clean",
    exitCode: 0,
    failing: 0,
    findings: 0,
  };
  assert.deepEqual(parseLastAudit(JSON.stringify(last)), last);
  assert.equal(parseLastAudit(undefined), null);
  assert.equal(parseLastAudit("{"), null);
  assert.equal(parseLastAudit('{"at":1}'), null);
});
