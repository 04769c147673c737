import assert from "node:assert/strict";
import type { AgentEvent } from "../events/mod.ts";
import { printNotice } from "./notices.ts";
import { setSink } from "./output.ts";

/** What printNotice() wrote on stderr for one notice. */
function printed(event: AgentEvent): string {
  let err = "";
  const prev = setSink({ out: () => {}, err: (t) => err += t, color: false });
  try {
    printNotice({ type: "event", event }, { json: false });
  } finally {
    setSink(prev);
  }
  return err;
}

Deno.test("a CPU alert line says the percentage, the duration and the limit it measured", () => {
  // The detail the resource sensor journals for a spike over the policy's limit.
  const event = {
    id: "e",
    session: "s",
    ts: "2026-12-06T12:00:00.000Z",
    kind: "resource.cpu",
    target: "tree",
    pid: 42,
    exe: "/usr/bin/python3",
    verdict: "deny",
    risk: 55,
    rule: "limits.cpu_percent",
    response: "alert",
    factors: [],
    sensor: "resource",
    detail: {
      percent: 97.5,
      peak_percent: 100,
      duration_seconds: 10.2,
      ongoing: true,
      limit_percent: 90,
      limit_seconds: 10,
    },
  } as unknown as AgentEvent;
  assert.match(
    printed(event),
    /resource\.cpu "tree" by pid 42 \(python3\) rule limits\.cpu_percent -> alert; measured: 97\.5% CPU \(peak 100%\) for 10\.2 s, ongoing, limit 90% for 10 s\n$/,
  );
  const read = { ...event, kind: "file.read", target: "/x", detail: {} } as unknown as AgentEvent;
  assert.doesNotMatch(printed(read), /measured/);
});
