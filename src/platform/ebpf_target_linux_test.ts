import assert from "node:assert/strict";
import { parsePidfdInfo, parseStatusIdentity } from "./ebpf_target_linux.ts";

/** The head of /proc/PID/status of a thread ("tokio worker" 4120 of process 4100), Linux 6.18. */
const THREAD_STATUS = [
  "Name:\ttokio worker",
  "Umask:\t0022",
  "State:\tS (sleeping)",
  "Tgid:\t4100",
  "Ngid:\t0",
  "Pid:\t4120",
  "PPid:\t4090",
  "TracerPid:\t0",
  "NSpid:\t4120",
  "",
].join("\n");

/** /proc/PID/fdinfo/FD of a pidfd on Linux 6.18, and of a regular file. */
const PIDFD_INFO = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1207\nPid:\t4100\nNSpid:\t4100\n";
const GONE_INFO = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1207\nPid:\t-1\nNSpid:\t-1\n";
const FILE_INFO = "pos:\t0\nflags:\t0100000\nmnt_id:\t23\nino:\t3\n";

Deno.test("parseStatusIdentity() reads a thread's process, its pid and a name with a space", () => {
  assert.deepEqual(parseStatusIdentity(THREAD_STATUS), {
    pid: 4120,
    tgid: 4100,
    name: "tokio worker",
  });
});

Deno.test("parseStatusIdentity() refuses a status without its Tgid line", () => {
  assert.throws(
    () => parseStatusIdentity("Name:\tx\nPid:\t3\n"),
    (e: unknown) => e instanceof SyntaxError && /"Tgid"/.test(e.message),
  );
});

Deno.test("parsePidfdInfo() reads a pidfd's pid, -1 once it exited, null for another file", () => {
  assert.equal(parsePidfdInfo(PIDFD_INFO), 4100);
  assert.equal(parsePidfdInfo(GONE_INFO), -1);
  assert.equal(parsePidfdInfo(FILE_INFO), null);
  // NSpid is not Pid.
  assert.equal(parsePidfdInfo("NSpid:\t7\n"), null);
});
