import assert from "node:assert/strict";
import {
  parseLoadavgLastPid,
  parseSnmpActiveOpens,
  readLastPid,
  readTcpActiveOpens,
} from "./counters_linux.ts";

Deno.test("`parseLoadavgLastPid()` reads the last allocated pid", () => {
  assert.equal(parseLoadavgLastPid("0.52 0.58 0.59 2/1203 48211\n"), 48211);
  assert.equal(parseLoadavgLastPid("garbage"), null);
});

Deno.test("`parseSnmpActiveOpens()` reads ActiveOpens from the Tcp lines", () => {
  const text = [
    "Ip: Forwarding DefaultTTL",
    "Ip: 1 64",
    "Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens",
    "Tcp: 1 200 120000 -1 5123 77",
    "",
  ].join("\n");
  assert.equal(parseSnmpActiveOpens(text), 5123);
  assert.equal(parseSnmpActiveOpens("Ip: 1\n"), null);
});

Deno.test("the pid counter advances when a process starts, and a TCP connect counts as an active open", async () => {
  const before = readLastPid();
  assert.ok(before !== null);
  await new Deno.Command("true").output();
  const after = readLastPid() as number;
  assert.ok(after !== before, "a new process takes a new pid");
  const opens = readTcpActiveOpens(Deno.pid) as number;
  const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: (server.addr as Deno.NetAddr).port,
  });
  const accepted = await server.accept();
  assert.ok((readTcpActiveOpens(Deno.pid) as number) >= opens + 1);
  conn.close();
  accepted.close();
  server.close();
});
