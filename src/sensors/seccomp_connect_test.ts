import assert from "node:assert/strict";
import { connectPlan, connectStep, timeoutResult, unixSockaddrAt } from "./seccomp_connect.ts";

/** A captured `struct sockaddr_in` for 127.0.0.1:8080. */
const INET = new Uint8Array([2, 0, 0x1f, 0x90, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);

function unix(path: string, abstract = false): Uint8Array {
  const bytes = new TextEncoder().encode(path);
  const out = new Uint8Array(2 + (abstract ? 1 : 0) + bytes.length + (abstract ? 0 : 1));
  out[0] = 1;
  out.set(bytes, abstract ? 3 : 2);
  return out;
}

Deno.test("connectPlan() connects inet addresses and absolute or abstract unix names as copied", () => {
  assert.deepEqual(connectPlan({ addr: INET, addrlen: 16, nullAddress: false }), {
    kind: "direct",
    family: "other",
    addr: INET,
  });
  const abs = unix("/run/x.sock");
  assert.equal(connectPlan({ addr: abs, addrlen: abs.length, nullAddress: false }).kind, "direct");
  const abstract = unix("bus", true);
  const plan = connectPlan({ addr: abstract, addrlen: abstract.length, nullAddress: false });
  assert.ok(plan.kind === "direct" && plan.family === "unix-abstract");
  // AF_UNSPEC (a UDP disconnect) goes as it is too.
  assert.equal(
    connectPlan({ addr: new Uint8Array(16), addrlen: 16, nullAddress: false }).kind,
    "direct",
  );
});

Deno.test("connectPlan() resolves a relative unix path in the caller's directory", () => {
  const rel = unix("sock");
  const plan = connectPlan({ addr: rel, addrlen: rel.length, nullAddress: false });
  assert.equal(plan.kind, "unix-relative");
  assert.ok(plan.kind === "unix-relative");
  assert.equal(new TextDecoder().decode(plan.path), "sock");
  const addr = unixSockaddrAt("/proc/self/fd/7", plan.path);
  assert.ok(addr);
  assert.equal(new TextDecoder().decode(addr.subarray(2)), "/proc/self/fd/7/sock\0");
  assert.equal(unixSockaddrAt("/proc/self/fd/7", new Uint8Array(100).fill(0x61)), null, "too long");
});

Deno.test("connectPlan() fails as the kernel does on a bad length or an unreadable address", () => {
  assert.deepEqual(connectPlan({ addr: INET, addrlen: 129, nullAddress: false }), {
    kind: "error",
    errno: 22,
  });
  assert.deepEqual(connectPlan({ addr: INET, addrlen: -1, nullAddress: false }).kind, "error");
  assert.deepEqual(connectPlan({ addr: new Uint8Array(0), addrlen: 16, nullAddress: true }), {
    kind: "error",
    errno: 14,
  });
  assert.deepEqual(connectPlan({ addr: INET.subarray(0, 8), addrlen: 16, nullAddress: false }), {
    kind: "error",
    errno: 14,
  });
});

Deno.test("connectStep() waits on a blocking connect under way and maps its end as the kernel does", () => {
  assert.deepEqual(connectStep(-115, { unix: false, again: false }), { kind: "wait" });
  assert.deepEqual(connectStep(-114, { unix: false, again: true }), { kind: "wait" });
  assert.deepEqual(connectStep(-11, { unix: true, again: false }), { kind: "retry" });
  assert.deepEqual(connectStep(-11, { unix: false, again: false }), {
    kind: "answer",
    result: -11,
  });
  assert.deepEqual(connectStep(-106, { unix: false, again: true }), { kind: "answer", result: 0 });
  assert.deepEqual(connectStep(-106, { unix: false, again: false }), {
    kind: "answer",
    result: -106,
  });
  assert.deepEqual(connectStep(-111, { unix: false, again: true }), {
    kind: "answer",
    result: -111,
  });
  assert.equal(timeoutResult({ unix: false }), -115);
  assert.equal(timeoutResult({ unix: true }), -11);
});
