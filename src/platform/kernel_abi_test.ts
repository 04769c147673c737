import assert from "node:assert/strict";
import { decodeSockaddr, errnoName, formatIpv6, openAccess, signalName } from "./kernel_abi.ts";

function sockaddr(bytes: number[]): Uint8Array {
  return new Uint8Array(bytes);
}

Deno.test("decodeSockaddr() reads an IPv4 address and its big-endian port", () => {
  const a = decodeSockaddr(sockaddr([2, 0, 0x1f, 0x90, 10, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0]));
  assert.deepEqual(a, { family: "inet", ip: "10.0.0.7", port: 8080, target: "10.0.0.7:8080" });
});

Deno.test("decodeSockaddr() reads an IPv6 address in RFC 5952 form, bracketed in the target", () => {
  const bytes = new Uint8Array(28);
  bytes[0] = 10;
  bytes[2] = 0x15;
  bytes[3] = 0x38; // 5432
  bytes[8 + 15] = 1; // ::1
  assert.deepEqual(decodeSockaddr(bytes), {
    family: "inet6",
    ip: "::1",
    port: 5432,
    target: "[::1]:5432",
  });
});

Deno.test("decodeSockaddr() reads unix path and abstract names", () => {
  const enc = new TextEncoder();
  const path = new Uint8Array([1, 0, ...enc.encode("/run/x.sock"), 0, 0, 0]);
  assert.deepEqual(decodeSockaddr(path), {
    family: "unix",
    path: "/run/x.sock",
    abstract: false,
    target: "unix:/run/x.sock",
  });
  const abstract = new Uint8Array([1, 0, 0, ...enc.encode("agent")]);
  assert.equal(decodeSockaddr(abstract)?.target, "unix:@agent");
});

Deno.test("decodeSockaddr() ignores AF_UNSPEC, netlink and short addresses", () => {
  assert.equal(decodeSockaddr(sockaddr([0, 0])), null);
  assert.equal(decodeSockaddr(sockaddr([16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])), null);
  assert.equal(decodeSockaddr(sockaddr([2, 0, 0, 80])), null);
  assert.equal(decodeSockaddr(sockaddr([2])), null);
});

Deno.test("formatIpv6() compresses the longest zero run and shows mapped IPv4 as dotted", () => {
  const v6 = (words: number[]) => {
    const b = new Uint8Array(16);
    words.forEach((w, i) => {
      b[i * 2] = w >> 8;
      b[i * 2 + 1] = w & 0xff;
    });
    return b;
  };
  assert.equal(formatIpv6(v6([0x2001, 0xdb8, 0, 0, 1, 0, 0, 1])), "2001:db8::1:0:0:1");
  assert.equal(formatIpv6(v6([0, 0, 0, 0, 0, 0, 0, 0])), "::");
  assert.equal(formatIpv6(v6([0xfe80, 0, 0, 0, 0, 0, 0, 0])), "fe80::");
  assert.equal(formatIpv6(v6([0, 0, 0, 0, 0, 0xffff, 0xa9fe, 0xa9fe])), "::ffff:169.254.169.254");
  assert.equal(formatIpv6(v6([1, 0, 2, 0, 3, 0, 4, 0])), "1:0:2:0:3:0:4:0");
});

Deno.test("openAccess() classifies opens from their flags", () => {
  assert.equal(openAccess(0), "read");
  assert.equal(openAccess(0o2000000 | 0o200000), "read"); // O_CLOEXEC | O_DIRECTORY
  assert.equal(openAccess(1), "write");
  assert.equal(openAccess(2), "write");
  assert.equal(openAccess(0o1000), "write"); // O_RDONLY | O_TRUNC truncates
  assert.equal(openAccess(1 | 0o100), "write"); // may or may not create: not known
  assert.equal(openAccess(1 | 0o100, true), "create"); // the kernel said it created
  assert.equal(openAccess(1 | 0o100, false), "write");
  assert.equal(openAccess(0o100 | 0o200), "create"); // O_CREAT | O_EXCL
});

Deno.test("errnoName() and signalName() name numbers, and say so when they cannot", () => {
  assert.equal(errnoName(-2), "ENOENT");
  assert.equal(errnoName(111), "ECONNREFUSED");
  assert.equal(errnoName(4242), "errno 4242");
  assert.equal(signalName(9), "SIGKILL");
  assert.equal(signalName(40), "SIG40");
});
