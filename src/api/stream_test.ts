import assert from "node:assert/strict";
import { SESSION, world } from "./_testing.ts";
import { journalPoller, ulidFloor } from "./live.ts";
import { type AgentEvent, createUlid } from "../events/mod.ts";

interface Message {
  id: string | undefined;
  event: string | undefined;
  data: string;
}

/** Reads the first `n` SSE messages of a response, failing after `timeoutMs`, then cancels it. */
async function readMessages(res: Response, n: number, timeoutMs = 2000): Promise<Message[]> {
  assert(res.body);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  const messages: Message[] = [];
  let buffer = "";
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`Timed out with ${messages.length} of ${n} messages`)),
      timeoutMs,
    );
  });
  try {
    while (messages.length < n) {
      const { value, done } = await Promise.race([reader.read(), timeout]);
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0 && messages.length < n) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const fields = new Map<string, string>();
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          fields.set(line.slice(0, colon), line.slice(colon + 1).trimStart());
        }
        if (fields.size === 0) continue;
        messages.push({
          id: fields.get("id"),
          event: fields.get("event"),
          data: fields.get("data") ?? "",
        });
      }
    }
    return messages;
  } finally {
    clearTimeout(timer);
    await reader.cancel();
  }
}

Deno.test("the stream sends live events with their id", async () => {
  const w = world();
  try {
    const res = await w.request("/v1/events/stream");
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^text\/event-stream/);
    const live = [w.nextEvent(), w.nextEvent()];
    setTimeout(() => live.forEach((e) => w.hub.publish(e)), 10);
    const messages = await readMessages(res, 2);
    assert.deepEqual(messages.map((m) => m.id), live.map((e) => e.id));
    assert.equal(messages[0]?.event, "event");
    assert.deepEqual(JSON.parse(messages[0]?.data ?? ""), live[0]);
  } finally {
    w.close();
  }
});

Deno.test("Last-Event-ID replays the journal after that id, then continues live", async () => {
  const w = world(6);
  try {
    const stored = w.journal.queryEvents({ session: SESSION });
    const from = stored[2]?.id ?? "";
    const res = await w.request("/v1/events/stream", { headers: { "last-event-id": from } });
    const live = w.nextEvent();
    setTimeout(() => {
      // Already replayed: a live copy of a journaled event is not sent twice.
      w.hub.publish(stored[5] as AgentEvent);
      w.hub.publish(live);
    }, 20);
    const messages = await readMessages(res, 4);
    assert.deepEqual(messages.map((m) => m.id), [
      ...stored.slice(3).map((e) => e.id),
      live.id,
    ]);
  } finally {
    w.close();
  }
});

Deno.test("the stream filters by session and refuses a bad Last-Event-ID", async () => {
  const w = world();
  try {
    const bad = await w.request("/v1/events/stream", { headers: { "last-event-id": "x" } });
    assert.equal(bad.status, 400);
    assert.equal((await bad.json() as { field: string }).field, "Last-Event-ID");
    const unknown = await w.request("/v1/events/stream?session=NOPE");
    assert.equal(unknown.status, 404);
    await unknown.body?.cancel();
    const res = await w.request(`/v1/events/stream?session=${SESSION}`);
    const other = w.nextEvent({ session: "other" });
    const mine = w.nextEvent();
    setTimeout(() => {
      w.hub.publish(other);
      w.hub.publish(mine);
    }, 10);
    assert.deepEqual((await readMessages(res, 1)).map((m) => m.id), [mine.id]);
  } finally {
    w.close();
  }
});

Deno.test("the stream sends keep-alive comments while idle", async () => {
  const w = world(0, { heartbeatMs: 20 });
  try {
    const res = await w.request("/v1/events/stream");
    assert(res.body);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!text.includes(": keep-alive")) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
    }
    await reader.cancel();
    assert.match(text, /: keep-alive/);
  } finally {
    w.close();
  }
});

Deno.test("journalPoller() publishes events journaled after it started, once each", () => {
  const w = world(3);
  const poller = journalPoller(w.journal, { intervalMs: 60_000 });
  try {
    const got: string[] = [];
    const unsubscribe = poller.subscribe((e) => got.push(e.id));
    poller.poll();
    assert.deepEqual(got, [], "events from before the subscription are not replayed");
    const a = w.nextEvent();
    const b = w.nextEvent();
    w.journal.append(b);
    w.journal.flush();
    poller.poll();
    // `a` was minted first but written later, as from a slower process: still delivered.
    w.journal.append(a);
    w.journal.flush();
    poller.poll();
    poller.poll();
    assert.deepEqual(got, [b.id, a.id]);
    unsubscribe();
  } finally {
    poller.close();
    w.close();
  }
});

Deno.test("journalPoller() publishes a late event whatever its id's time: a backlog stored an hour late", () => {
  const w = world(5);
  const poller = journalPoller(w.journal, { intervalMs: 60_000 });
  try {
    const got: string[] = [];
    const unsubscribe = poller.subscribe((e) => got.push(e.id));
    const hourAgo = Date.now() - 3_600_000;
    const old = { ...w.nextEvent(), id: createUlid({ now: () => hourAgo })() };
    const fresh = w.nextEvent();
    w.journal.append(fresh);
    w.journal.flush();
    poller.poll();
    w.journal.append(old);
    w.journal.flush();
    poller.poll();
    poller.poll();
    assert.deepEqual(got, [fresh.id, old.id]);
    assert.ok(old.id < ulidFloor(hourAgo + 1), "its id is an hour old");
    unsubscribe();
  } finally {
    poller.close();
    w.close();
  }
});

Deno.test("ulidFloor() is the smallest id of its millisecond", () => {
  assert.equal(ulidFloor(0), "00000000000000000000000000");
  const w = world();
  try {
    const e = w.nextEvent();
    const t = Date.parse(e.ts);
    assert(ulidFloor(t) <= e.id);
    assert(ulidFloor(t + 1) > e.id);
  } finally {
    w.close();
  }
});

Deno.test("a resume also replays events still buffered in this process's journal", async () => {
  const w = world(2);
  try {
    const stored = w.journal.queryEvents({ session: SESSION });
    const buffered = w.nextEvent();
    w.journal.append(buffered);
    const res = await w.request("/v1/events/stream", {
      headers: { "last-event-id": stored[1]?.id ?? "" },
    });
    assert.deepEqual((await readMessages(res, 1)).map((m) => m.id), [buffered.id]);
  } finally {
    w.close();
  }
});
