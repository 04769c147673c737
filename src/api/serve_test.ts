import assert from "node:assert/strict";
import { join } from "node:path";
import { JOURNAL_FILE, openJournal } from "../journal/mod.ts";
import { processState, readStat } from "../platform/mod.ts";
import { allowedHostsFor } from "./auth.ts";
import { createApp } from "./app.ts";
import { journalPoller } from "./live.ts";
import { SESSION, TOKEN, world } from "./_testing.ts";

Deno.test("over a real socket: Host is checked and the stream follows another writer", async () => {
  const w = world(2);
  const poller = journalPoller(w.journal, { intervalMs: 20 });
  const ac = new AbortController();
  let app: ReturnType<typeof createApp> | undefined;
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen: () => {} },
    (req) => app?.fetch(req) ?? new Response(null, { status: 503 }),
  );
  // A second handle on the same file stands for another Sentry process writing events.
  const writer = openJournal(join(w.dir, JOURNAL_FILE), { hostname: "test" });
  try {
    const port = server.addr.port;
    app = createApp({
      journal: w.journal,
      dataDir: w.dir,
      token: TOKEN,
      allowedHosts: allowedHostsFor("127.0.0.1", port),
      live: poller,
    });
    const base = `http://127.0.0.1:${port}`;
    const health = await fetch(`${base}/health`);
    assert.equal(health.status, 200);
    await health.body?.cancel();
    const viaLocalhost = await fetch(`http://localhost:${port}/health`).catch(() => null);
    if (viaLocalhost !== null) {
      assert.equal(viaLocalhost.status, 200);
      await viaLocalhost.body?.cancel();
    }

    const first = w.journal.queryEvents({ session: SESSION })[0];
    assert(first);
    const res = await fetch(`${base}/v1/events/stream`, {
      headers: { authorization: `Bearer ${TOKEN}`, "last-event-id": first.id },
    });
    assert.equal(res.status, 200);
    const fresh = w.nextEvent();
    setTimeout(() => {
      writer.append(fresh);
      writer.flush();
    }, 50);
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    const deadline = Date.now() + 3000;
    while (!text.includes(`id: ${fresh.id}`) && Date.now() < deadline) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
    }
    await reader.cancel();
    const ids = [...text.matchAll(/^id: (\w+)$/gm)].map((m) => m[1]);
    const second = w.journal.queryEvents({ session: SESSION })[1];
    assert.deepEqual(ids, [second?.id, fresh.id]);
  } finally {
    writer.close();
    ac.abort();
    await server.finished;
    poller.close();
    w.close();
  }
});

Deno.test("the default controls pause, resume and kill a session's process from outside", async () => {
  const w = world(0, { realControls: true });
  const child = new Deno.Command("sleep", { args: ["30"], stdout: "null", stderr: "null" })
    .spawn();
  try {
    w.journal.updateSession(SESSION, { pid: child.pid });
    // What the session's Sentry would keep: the pid with its start time.
    Deno.mkdirSync(join(w.dir, "run"), { recursive: true });
    const start = readStat(child.pid)?.starttime;
    Deno.writeTextFileSync(join(w.dir, "run", `${SESSION}.pids`), `${child.pid} ${start}\n`);
    const post = async (action: string) => {
      const res = await w.request(`/v1/sessions/${SESSION}/${action}`, { method: "POST" });
      assert.equal(res.status, 200, action);
      return await res.json() as { ok: boolean; done: number[] };
    };
    const paused = await post("pause");
    assert.deepEqual(paused.done, [child.pid]);
    assert.equal(processState(child.pid), "T");
    assert.equal(w.journal.getSession(SESSION).state, "paused");
    await post("resume");
    assert.notEqual(processState(child.pid), "T");
    assert.equal(w.journal.getSession(SESSION).state, "running");
    const killed = await post("kill");
    assert.deepEqual(killed.done, [child.pid]);
    assert.equal((await child.status).signal, "SIGTERM");
    assert.deepEqual(
      w.journal.responses(SESSION).map((r) => [r.action, r.outcome]),
      [["pause", "ok"], ["resume", "ok"], ["kill", "ok"]],
    );
    const rollback = await w.request(`/v1/sessions/${SESSION}/rollback`, { method: "POST" });
    assert.equal(rollback.status, 409);
    await rollback.body?.cancel();
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await child.status;
    w.close();
  }
});

Deno.test("the default controls signal nothing when the pids file's start time does not match (a reused pid)", async () => {
  const w = world(0, { realControls: true });
  const other = new Deno.Command("sleep", { args: ["30"], stdout: "null", stderr: "null" })
    .spawn();
  try {
    // The session's pid now names an unrelated process: its start time is not the recorded one.
    w.journal.updateSession(SESSION, { pid: other.pid });
    Deno.mkdirSync(join(w.dir, "run"), { recursive: true });
    const start = (readStat(other.pid)?.starttime ?? 0) - 1;
    Deno.writeTextFileSync(join(w.dir, "run", `${SESSION}.pids`), `${other.pid} ${start}\n`);
    for (const action of ["pause", "kill"]) {
      const res = await w.request(`/v1/sessions/${SESSION}/${action}`, { method: "POST" });
      const body = await res.json() as { ok: boolean; done: number[] };
      assert.deepEqual([body.ok, body.done], [false, []], action);
    }
    // A process just spawned may still be on its way into its sleep (R), never stopped (T).
    await waitForState(other.pid, "S");
    assert.equal(processState(other.pid), "S");
    assert.deepEqual(w.journal.responses(SESSION), []);
    assert.equal(w.journal.getSession(SESSION).state, "running");
  } finally {
    other.kill("SIGKILL");
    await other.status;
    w.close();
  }
});

/** Waits up to 2 s for a process to reach a state (a process just spawned may still be running). */
async function waitForState(pid: number, state: string): Promise<void> {
  const deadline = Date.now() + 2000;
  while (processState(pid) !== state && processState(pid) !== "T" && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 10));
  }
}
