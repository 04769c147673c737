import assert from "node:assert/strict";
import { formatPidsFile, parsePidsFile } from "./pids_file.ts";

/** A pids file as a session wrote it on the development VM. */
const SAMPLE = `4242 918273
4250 918290
cgroup {"version":2,"path":"/sys/fs/cgroup/unified/sentry/01K0ABC","origin":"/sys/fs/cgroup/unified"}
`;

Deno.test("parsePidsFile() reads the processes and the cgroup line", () => {
  assert.deepEqual(parsePidsFile(SAMPLE), {
    processes: [{ pid: 4242, start: 918273 }, { pid: 4250, start: 918290 }],
    cgroup: {
      version: 2,
      path: "/sys/fs/cgroup/unified/sentry/01K0ABC",
      origin: "/sys/fs/cgroup/unified",
    },
  });
  assert.equal(formatPidsFile(parsePidsFile(SAMPLE)), SAMPLE);
});

Deno.test("parsePidsFile() skips what does not parse, and reads files without a cgroup", () => {
  const text = `4242 918273\n0 5\nx 1\n42\ncgroup {bad\ncgroup {"version":3,"path":"/x"}\n`;
  assert.deepEqual(parsePidsFile(text), {
    processes: [{ pid: 4242, start: 918273 }],
    cgroup: null,
  });
  assert.deepEqual(parsePidsFile(""), { processes: [], cgroup: null });
  // A relative path could name anything: refused.
  assert.equal(parsePidsFile(`cgroup {"version":2,"path":"sentry/x","origin":null}`).cgroup, null);
});

Deno.test("a pids file says `starting` until the agent is let go, and older files read as started", () => {
  const starting = { processes: [{ pid: 7, start: 99 }], cgroup: null, starting: true };
  assert.equal(formatPidsFile(starting), "7 99\nstarting\n");
  assert.deepEqual(parsePidsFile(formatPidsFile(starting)), starting);
  assert.equal(parsePidsFile("7 99\n").starting, undefined);
  assert.equal(formatPidsFile({ ...starting, starting: false }), "7 99\n");
});
