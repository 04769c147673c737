/**
 * End-to-end tests of `sentry run` with real agents: every sensor records what the agent did,
 * with the right kind, target and pid, and alerts reach stderr.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Listener, ofKind, PYTHON, pyWrite, withSandbox } from "./_helpers.ts";

Deno.test("`sentry run --sensor poll` records processes, files, renames, connections and listens with their pids", async () => {
  await withSandbox(async (sb) => {
    const web = new Listener();
    const db = new Listener();
    try {
      const data = await sb.write(join(sb.workspace, "data.txt"), "rows\n");
      const out = join(sb.workspace, "out.txt");
      const a = join(sb.workspace, "a.txt");
      const b = join(sb.workspace, "b.txt");
      const policy = await sb.write(
        "policy.yaml",
        `name: e2e-sensors\ndatabase:\n  ports: [${db.port}]\n`,
      );
      const reader = [
        "import os, time",
        pyWrite(sb.path("reader.pid"), "os.getpid()"),
        `f = open(${JSON.stringify(data)})`,
        "time.sleep(1.0)",
        "f.close()",
      ].join("\n");
      const agent = await sb.write(
        "agent.py",
        `
import os, socket, subprocess, sys, time
HOLD = 0.4
f = open(${JSON.stringify(out)}, "w"); f.write("x"); f.flush(); time.sleep(HOLD); f.close()
subprocess.run([sys.executable, "-c", ${JSON.stringify(reader)}], check=True)
open(${JSON.stringify(a)}, "w").write("a"); time.sleep(HOLD)
os.rename(${JSON.stringify(a)}, ${JSON.stringify(b)}); time.sleep(HOLD)
os.remove(${JSON.stringify(b)}); time.sleep(HOLD)
s = socket.create_connection(("127.0.0.1", ${web.port})); time.sleep(HOLD); s.close()
s = socket.create_connection(("127.0.0.1", ${db.port})); time.sleep(HOLD); s.close()
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen()
${pyWrite(sb.path("listen.port"), "l.getsockname()[1]")}
time.sleep(HOLD); l.close()
sys.exit(3)
`,
      );
      const run = await sb.sentry(
        [
          "run",
          "--sensor",
          "poll",
          "--policy",
          policy,
          "--workspace",
          sb.workspace,
          "--",
          PYTHON,
          agent,
        ],
        { timeoutMs: 30_000 },
      );
      assert.equal(run.code, 3, run.stderr);
      const readerPid = Number(await sb.readWhenWritten("reader.pid"));
      const listenPort = Number(await sb.readWhenWritten("listen.port"));
      const [session] = await sb.sessions();
      assert.ok(session !== undefined);
      assert.equal(session.state, "ended");
      assert.equal(session.exitCode, 3);
      const root = session.pid as number;
      const events = await sb.events();
      const about = (kind: string, target: string) =>
        events.filter((e) => e.kind === kind && e.target === target);

      // Processes: the agent itself (its launcher's pid, after exec), its child, their exits.
      const rootExec = ofKind(events, "proc.exec").find((e) =>
        e.pid === root && e.cmdline.includes(agent)
      );
      assert.ok(
        rootExec,
        `proc.exec of the agent: ${
          JSON.stringify(ofKind(events, "proc.exec").filter((e) => e.pid === root))
        }`,
      );
      assert.equal(rootExec.exe, await Deno.realPath(PYTHON));
      const readerExec = ofKind(events, "proc.exec").find((e) => e.pid === readerPid);
      assert.ok(readerExec, `proc.exec of the reader ${readerPid}`);
      assert.equal(readerExec.ppid, root);
      const rootExit = ofKind(events, "proc.exit").find((e) => e.pid === root);
      assert.deepEqual(rootExit?.detail, { code: 3, signal: null });
      assert.ok(ofKind(events, "proc.exit").some((e) => e.pid === readerPid));

      // Files from descriptors: the write by the agent, the read held 1 s by the reader.
      const write = about("file.write", out).find((e) => e.sensor === "fd");
      assert.equal(write?.pid, root);
      assert.equal(write?.detail.access, "write");
      const read = about("file.read", data);
      assert.equal(read.length, 1, JSON.stringify(read));
      assert.equal(read[0]?.pid, readerPid);
      assert.equal(read[0]?.sensor, "fd");
      assert.equal(read[0]?.verdict, "allow");

      // Files from inotify: create, rename and delete in the workspace.
      assert.ok(about("file.create", a).some((e) => e.sensor === "watch"), "file.create a.txt");
      const rename = about("file.rename", b)[0];
      assert.equal(rename?.detail.from, a);
      assert.ok(about("file.delete", b).length > 0, "file.delete b.txt");

      // Network: a connect, a database connect (denied: not in database.allow), a listen.
      const connect = about("net.connect", `127.0.0.1:${web.port}`);
      assert.equal(connect.length, 1, JSON.stringify(ofKind(events, "net.connect")));
      assert.equal(connect[0]?.pid, root);
      assert.equal(connect[0]?.verdict, "allow");
      const dbc = about("db.connect", `127.0.0.1:${db.port}`);
      assert.equal(dbc.length, 1, JSON.stringify(ofKind(events, "db.connect")));
      assert.equal(dbc[0]?.pid, root);
      assert.equal(dbc[0]?.verdict, "deny");
      assert.equal(dbc[0]?.response, "alert");
      const listen = about("net.listen", `127.0.0.1:${listenPort}`);
      assert.equal(listen[0]?.pid, root);

      // The alert reached stderr as one line.
      assert.match(
        run.stderr,
        new RegExp(`DENY risk \\d+ db\\.connect "127\\.0\\.0\\.1:${db.port}"`),
      );
      assert.doesNotMatch(run.stderr, /resume with/, "an alert does not pause");
    } finally {
      await web.close();
      await db.close();
    }
  });
});

Deno.test("`sentry run --json` prints alerts as JSON lines on stderr", async () => {
  await withSandbox(async (sb) => {
    // A listener on a database port of the default policy when one is free; else a policy
    // that adds a free port.
    const standard = Listener.firstFree([5432, 3306, 6379, 27017, 26257]);
    const db = standard ?? new Listener();
    try {
      const policy = standard !== null
        ? "default"
        : await sb.write("policy.yaml", `name: e2e-db\ndatabase:\n  ports: [${db.port}]\n`);
      const agent = await sb.write(
        "agent.py",
        `import socket, time\ns = socket.create_connection(("127.0.0.1", ${db.port}))\ntime.sleep(0.5)\ns.close()\n`,
      );
      const run = await sb.sentry(["run", "--json", "--policy", policy, "--", PYTHON, agent]);
      assert.equal(run.code, 0, run.stderr);
      const lines = run.stderr.split("\n").filter((l) => l.trim() !== "");
      const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
      const alert = parsed.find((j) => j.type === "alert");
      assert.ok(alert, run.stderr);
      assert.equal(alert.kind, "db.connect", run.stderr);
      assert.equal(alert.target, `127.0.0.1:${db.port}`);
      assert.equal(alert.verdict, "deny");
      assert.equal(alert.response, "alert");
      const [event] = (await sb.events()).filter((e) => e.kind === "db.connect");
      assert.equal(alert.id, event?.id, "the alert names the journaled event");
    } finally {
      await db.close();
    }
  });
});

Deno.test("`sentry run` records CPU and memory held over the policy's limits", async () => {
  await withSandbox(async (sb) => {
    const policy = await sb.write(
      "policy.yaml",
      "name: e2e-limits\nlimits:\n  cpu_percent: 50\n  cpu_seconds: 1\n  memory_mb: 50\n",
    );
    // Two busy processes, so that the tree stays over 50% of a core even on a loaded machine.
    const busy = "import time\nend = time.time() + 3.0\nwhile time.time() < end:\n    pass\n";
    const agent = await sb.write(
      "agent.py",
      `
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", ${JSON.stringify(busy)}])
exec(${JSON.stringify(busy)})
child.wait()
block = b"x" * (150 * 1024 * 1024)
time.sleep(1.5)
`,
    );
    const run = await sb.sentry(["run", "--policy", policy, "--", PYTHON, agent], {
      timeoutMs: 30_000,
    });
    assert.equal(run.code, 0, run.stderr);
    const events = await sb.events();
    const [session] = await sb.sessions();
    const cpu = ofKind(events, "resource.cpu");
    assert.equal(cpu.length, 1, JSON.stringify(cpu));
    assert.equal(cpu[0]?.target, "tree");
    assert.equal(cpu[0]?.pid, session?.pid);
    assert.equal(cpu[0]?.verdict, "deny");
    assert.ok((cpu[0]?.detail.percent as number) > 50, JSON.stringify(cpu[0]?.detail));
    assert.ok((cpu[0]?.detail.duration_seconds as number) >= 1);
    const memory = ofKind(events, "resource.memory");
    assert.equal(memory.length, 1, JSON.stringify(memory));
    assert.equal(memory[0]?.verdict, "deny");
    // Reported as soon as the tree's resident memory passes the limit, on its way to 150 MB.
    assert.ok((memory[0]?.detail.mb as number) > 50, JSON.stringify(memory[0]?.detail));
    assert.equal(memory[0]?.detail.limit_mb, 50);
  });
});
