import assert from "node:assert/strict";
import { HOST, SESSION, TOKEN, world } from "./_testing.ts";
import { DASHBOARD_ASSETS, DASHBOARD_CSP } from "./dashboard.ts";
import { KINDS } from "../events/mod.ts";
import { openStream, SseParser } from "./assets/sse.js";
import * as view from "./assets/view.js";

const ASSET_DIR = new URL("./assets/", import.meta.url);

/** A request with the right Host and no token. */
function anonymous(path: string, init: RequestInit = {}): RequestInit & { url: string } {
  const headers = new Headers(init.headers);
  if (!headers.has("host")) headers.set("host", HOST);
  return { ...init, headers, url: `http://${HOST}${path}` };
}

function assertSecurityHeaders(res: Response): void {
  assert.equal(res.headers.get("content-security-policy"), DASHBOARD_CSP);
  assert.equal(res.headers.get("x-content-type-options"), "nosniff");
  assert.equal(res.headers.get("x-frame-options"), "DENY");
  assert.equal(res.headers.get("referrer-policy"), "no-referrer");
  assert.equal(res.headers.get("access-control-allow-origin"), null);
}

Deno.test("GET / serves the dashboard page without a token, with a strict CSP", async () => {
  const w = world();
  try {
    const { url, ...init } = anonymous("/");
    const res = await w.app.request(url, init);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "text/html; charset=utf-8");
    assertSecurityHeaders(res);
    const csp = DASHBOARD_CSP.split("; ");
    for (const directive of ["default-src 'self'", "script-src 'self'", "frame-ancestors 'none'"]) {
      assert.ok(csp.includes(directive), directive);
    }
    assert.ok(!DASHBOARD_CSP.includes("unsafe"), "no unsafe-inline or unsafe-eval");
    const html = await res.text();
    assert.equal(html, await Deno.readTextFile(new URL("index.html", ASSET_DIR)));
    assert.match(html, /<script type="module" src="\/assets\/app\.js"><\/script>/);
    // The page opens; the data still needs the token.
    const { url: api, ...apiInit } = anonymous("/v1/sessions");
    assert.equal((await w.app.request(api, apiInit)).status, 401);
  } finally {
    w.close();
  }
});

Deno.test("every dashboard asset is served with its content type and the security headers", async () => {
  const w = world();
  try {
    for (const [name, type] of Object.entries(DASHBOARD_ASSETS)) {
      const { url, ...init } = anonymous(`/assets/${name}`);
      const res = await w.app.request(url, init);
      assert.equal(res.status, 200, name);
      assert.equal(res.headers.get("content-type"), type, name);
      assertSecurityHeaders(res);
      assert.equal(await res.text(), await Deno.readTextFile(new URL(name, ASSET_DIR)), name);
    }
    // With a token too (the browser never sends one for these, but it must not hurt).
    const res = await w.request("/assets/app.js");
    assert.equal(res.status, 200);
    await res.body?.cancel();
  } finally {
    w.close();
  }
});

Deno.test("the asset table lists every file of src/api/assets, and nothing else is served", async () => {
  const files = [];
  for await (const entry of Deno.readDir(ASSET_DIR)) files.push(entry.name);
  assert.deepEqual(files.sort(), Object.keys(DASHBOARD_ASSETS).sort());
  const w = world();
  try {
    for (
      const path of [
        "/assets/nope.js",
        "/assets/..%2Fdashboard.ts",
        "/assets/%2e%2e%2fapp.ts",
        "/assets/constructor",
        "/assets/__proto__",
        "/assets/",
        "/index.html",
      ]
    ) {
      const { url, ...init } = anonymous(path);
      const res = await w.app.request(url, init);
      // Anything but a listed asset is not found; without the token the API answers 401.
      assert.ok(res.status === 404 || res.status === 401, `${path}: ${res.status}`);
      const body = await res.json();
      assert.equal(typeof body.error, "string", path);
    }
    const { url, ...init } = anonymous("/assets/nope.js");
    const res = await w.app.request(url, init);
    assert.equal(res.status, 404);
    assert.deepEqual(await res.json(), { error: 'No dashboard asset "nope.js"' });
  } finally {
    w.close();
  }
});

Deno.test("the dashboard still passes the Host check", async () => {
  const w = world();
  try {
    for (const path of ["/", "/assets/app.js"]) {
      const { url, ...init } = anonymous(path, { headers: { host: "evil.example:7070" } });
      const res = await w.app.request(url, init);
      assert.equal(res.status, 421, path);
      assert.equal((await res.json()).field, "host");
    }
  } finally {
    w.close();
  }
});

Deno.test("the dashboard answers 405 to other methods, and HEAD like GET", async () => {
  const w = world();
  try {
    for (const path of ["/", "/assets/app.js"]) {
      const { url, ...init } = anonymous(path, { method: "POST" });
      const res = await w.app.request(url, init);
      assert.equal(res.status, 405, path);
      assert.equal(res.headers.get("allow"), "GET");
      await res.body?.cancel();
    }
    const { url, ...init } = anonymous("/", { method: "HEAD" });
    const head = await w.app.request(url, init);
    assert.equal(head.status, 200);
    assert.equal(head.headers.get("content-type"), "text/html; charset=utf-8");
    await head.body?.cancel();
  } finally {
    w.close();
  }
});

Deno.test("the dashboard's files load nothing but its own assets: no inline script, no URL", async () => {
  const html = await Deno.readTextFile(new URL("index.html", ASSET_DIR));
  assert.doesNotMatch(html, /<script(?![^>]*\ssrc=)[^>]*>/, "no inline script");
  assert.doesNotMatch(html, /\sstyle=|<style/, "no inline style");
  assert.doesNotMatch(html, /\son[a-z]+=/i, "no inline handler");
  const refs = [...html.matchAll(/\s(?:src|href)="([^"]*)"/g)].map((m) => m[1] ?? "");
  assert.ok(refs.length >= 3);
  for (const ref of refs) {
    assert.match(ref, /^\/assets\//, ref);
    assert.ok(Object.hasOwn(DASHBOARD_ASSETS, ref.slice("/assets/".length)), ref);
  }
  for (const name of Object.keys(DASHBOARD_ASSETS)) {
    const text = await Deno.readTextFile(new URL(name, ASSET_DIR));
    // The SVG namespace is a name, not a request.
    const urls = text.replaceAll("http://www.w3.org/2000/svg", "").match(
      /(?:(?:https?|wss?):)?\/\/[a-z0-9-]+(?:\.[a-z0-9-]+)+/gi,
    );
    assert.equal(urls, null, `${name} names an external URL: ${urls}`);
    assert.doesNotMatch(text, /@import|url\(\s*["']?(?!data:)[a-z]+:/i, name);
    if (name.endsWith(".js")) {
      for (const m of text.matchAll(/^import\s[^"]*"([^"]+)"/gm)) {
        const spec = m[1] ?? "";
        assert.match(spec, /^\.\/[\w]+\.js$/, `${name} imports ${spec}`);
        assert.ok(Object.hasOwn(DASHBOARD_ASSETS, spec.slice(2)), spec);
      }
      assert.doesNotMatch(
        text,
        /\binnerHTML\b|\bouterHTML\b|insertAdjacentHTML|document\.write/,
        name,
      );
      assert.doesNotMatch(text, /\beval\(|new Function\(/, name);
    }
  }
});

Deno.test("the dashboard's kind list is the event schema's", () => {
  assert.deepEqual(view.KINDS, [...KINDS]);
  const grouped = view.KIND_GROUPS.flatMap((g) => g.kinds).sort();
  assert.deepEqual(grouped, [...KINDS].sort());
});

Deno.test("riskBand() and matchesSearch() sort and find events as the feed shows them", () => {
  assert.deepEqual(
    [0, 1, 29, 30, 59, 60, 79, 80, 100].map(view.riskBand),
    ["none", "low", "low", "medium", "medium", "high", "high", "critical", "critical"],
  );
  const event = {
    kind: "file.read",
    target: "/home/u/.ssh/id_rsa",
    rule: "no_ssh_keys",
    verdict: "deny",
    response: "pause",
    exe: "/usr/bin/python3",
    cmdline: ["python3", "agent.py"],
    pid: 4242,
  };
  assert.ok(view.matchesSearch(event, ""));
  assert.ok(view.matchesSearch(event, "  SSH   deny "));
  assert.ok(view.matchesSearch(event, "agent.py 4242"));
  assert.ok(!view.matchesSearch(event, "ssh allow"));
  assert.equal(view.duration(850), "850 ms");
  assert.equal(view.duration(245_000), "4 min 5 s");
  assert.equal(view.duration(7_380_000), "2 h 3 min");
});

Deno.test("SseParser parses the event stream however the chunks split it", () => {
  const text = ': hello\r\nretry: 2500\nevent: event\ndata: {"a":1}\nid: 01A\n\n' +
    "data: line 1\r\ndata: line 2\r\n\r\n" +
    "event: lone\n\n" + // no data: not dispatched
    "id: 01B\rdata:nospace\r\r" +
    "data: last";
  const want = [
    { event: "event", data: '{"a":1}', id: "01A" },
    { event: "message", data: "line 1\nline 2", id: "01A" },
    { event: "message", data: "nospace", id: "01B" },
  ];
  for (const size of [1, 2, 3, 7, 1000]) {
    const parser = new SseParser();
    const got = [];
    for (let i = 0; i < text.length; i += size) got.push(...parser.push(text.slice(i, i + size)));
    assert.deepEqual(got, want, `chunks of ${size}`);
    assert.equal(parser.retryMs, 2500);
    // The unterminated message waits for its blank line.
    assert.deepEqual(parser.push("\n\n"), [{ event: "message", data: "last", id: "01B" }]);
  }
});

Deno.test("openStream() sends the token as a header, and resumes with Last-Event-ID after the stream ends", async () => {
  const w = world();
  const sent: { url: string; auth: string | null; lastEventId: string | null }[] = [];
  const received: string[] = [];
  const states: string[] = [];
  let stream: ReturnType<typeof openStream> | undefined;
  try {
    const first = w.nextEvent();
    const second = w.nextEvent();
    const third = w.nextEvent();
    let gotAll: () => void = () => {};
    const all = new Promise<void>((resolve) => gotAll = resolve);
    stream = openStream({
      url: "/v1/events/stream",
      token: TOKEN,
      retryMs: 10,
      fetch: async (input, init) => {
        const headers = new Headers(init?.headers);
        sent.push({
          url: String(input),
          auth: headers.get("authorization"),
          lastEventId: headers.get("last-event-id"),
        });
        headers.set("host", HOST);
        const res = await w.app.request(`http://${HOST}${input}`, { ...init, headers });
        if (sent.length > 1 || res.body === null) return res;
        // The first connection drops after its first chunk, as a server restart would.
        const reader = res.body.getReader();
        const body = new ReadableStream<Uint8Array>({
          async pull(controller) {
            const { value, done } = await reader.read();
            if (!done) controller.enqueue(value);
            await reader.cancel();
            controller.close();
          },
        });
        return new Response(body, { status: res.status, headers: res.headers });
      },
      onState: (s) => states.push(s),
      onMessage: (message) => {
        const event = JSON.parse(message.data);
        received.push(event.id);
        if (event.id === first.id) {
          // Written while the client is away: the replay must bring these.
          w.journal.append(second);
          w.journal.append(third);
          w.journal.flush();
        }
        if (received.length === 3) gotAll();
      },
    });
    // Publish once the stream has subscribed.
    while (!states.includes("open")) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 20));
    w.journal.append(first);
    w.hub.publish(first);
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      all,
      new Promise((_, reject) =>
        timer = setTimeout(() => reject(new Error(`Got ${received}`)), 5000)
      ),
    ]);
    clearTimeout(timer);
    assert.deepEqual(received, [first.id, second.id, third.id]);
    assert.equal(stream.lastEventId, third.id);
    assert.equal(sent.length, 2);
    for (const s of sent) {
      assert.equal(s.url, "/v1/events/stream", "no token in the URL");
      assert.equal(s.auth, `Bearer ${TOKEN}`);
    }
    assert.equal(sent[0]?.lastEventId, null);
    assert.equal(sent[1]?.lastEventId, first.id);
    assert.deepEqual(states.slice(0, 4), ["connecting", "open", "retrying", "connecting"]);
    assert.equal(first.session, SESSION);
  } finally {
    stream?.close();
    await new Promise((r) => setTimeout(r, 20));
    w.close();
  }
});

Deno.test("openStream() stops on a refused token", async () => {
  const w = world();
  const states: string[] = [];
  let calls = 0;
  try {
    const done = new Promise<void>((resolve) => {
      openStream({
        url: "/v1/events/stream",
        token: "wrong",
        retryMs: 5,
        fetch: (input, init) => {
          calls++;
          const headers = new Headers(init?.headers);
          headers.set("host", HOST);
          return Promise.resolve(w.app.request(`http://${HOST}${input}`, { ...init, headers }));
        },
        onMessage: () => {},
        onState: (s) => {
          states.push(s);
          if (s === "unauthorized") resolve();
        },
      });
    });
    await done;
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(states, ["connecting", "unauthorized"]);
    assert.equal(calls, 1);
  } finally {
    w.close();
  }
});
