/**
 * The dashboard's host filter in a real headless Chromium (Debian's, driven by playwright-core; no
 * browser is downloaded), over a real collector: `sentry server` with two upload keys receives
 * gzip batches from two hosts over loopback, as their uploaders would send them. First
 * `sentry serve` over the same journal (its `/v1/hosts` lists the sessions' host names), then
 * the collector itself: both hosts are listed with their sessions, last-seen time and dropped
 * count, selecting one lists only its sessions and agents (also when new sessions arrive live,
 * and after a reload), on a laptop and a phone. It saves tests/artifacts/collector-dashboard.png,
 * collector-dashboard-phone.png, and collector-dashboard-failure.png when it fails. Skipped, with
 * the reason on stderr, when /usr/bin/chromium is missing.
 * @module
 */
import assert from "node:assert/strict";
import type { Browser, Page } from "playwright-core";
import { postgresSkip, startPostgres } from "../src/collector/_pg_testing.ts";
import { createUlid } from "../src/events/mod.ts";
import { ago, collectorHosts, localHosts } from "../src/api/assets/view.js";
import {
  ARTIFACTS,
  browserTest,
  type Held,
  launchChromium,
  openDashboard,
  STEP_MS,
} from "./_browser.ts";
import { type Sandbox, waitFor } from "./_helpers.ts";

const ulid = createUlid();

/** An uploading host, as its batches name it. */
interface Host {
  id: string;
  name: string;
  key: string;
}

/** A session to upload, with its number of events. */
interface Upload {
  id: string;
  agent: string;
  events: number;
  ended?: boolean;
}

/**
 * A valid sync batch (docs/sync-protocol.md) from `host`: its sessions, started a few minutes
 * ago, each with events on files under `/srv/<host name>/`, one in five of them denied.
 */
function batch(host: Host, sessions: Upload[], dropped: number): string {
  const start = Date.now() - 5 * 60_000;
  const events = sessions.flatMap((s) =>
    Array.from({ length: s.events }, (_, i) => {
      const deny = i % 5 === 4;
      return {
        id: ulid(),
        ts: new Date(start + i * 1500).toISOString(),
        session: s.id,
        agent: s.agent,
        pid: 4321,
        ppid: 1,
        exe: "/usr/bin/python3",
        cmdline: ["python3", "agent.py"],
        kind: deny ? "file.read" : "file.write",
        target: deny ? `/home/dev/.ssh/id_${i}` : `/srv/${host.name}/${s.agent}/f${i}.txt`,
        detail: {},
        sensor: "fd",
        verdict: deny ? "deny" : "allow",
        risk: deny ? 85 : 5,
        factors: deny ? [{ id: "secret_path", points: 85, reason: "reads an SSH key" }] : [],
        rule: deny ? "no_ssh_keys" : "files.write.allow",
        response: deny ? "alert" : "none",
      };
    })
  );
  return JSON.stringify({
    protocol: 1,
    batch: ulid(),
    host: { id: host.id, name: host.name },
    sent_at: new Date().toISOString(),
    sessions: sessions.map((s) => ({
      id: s.id,
      agent: s.agent,
      command: [s.agent],
      pid: 4321,
      kind: "run",
      policy: "coding-agent",
      mode: "alert",
      workspace: `/srv/${host.name}`,
      host: host.name,
      sentryPid: 4320,
      startedAt: new Date(start).toISOString(),
      endedAt: s.ended ? new Date(start + 60_000).toISOString() : null,
      state: s.ended ? "ended" : "running",
      exitCode: s.ended ? 0 : null,
      note: null,
    })),
    events,
    dropped,
  });
}

/** Uploads a batch as a host's uploader does: gzip, the host's key, the protocol header. */
async function upload(base: string, host: Host, body: string): Promise<void> {
  const gz = await new Response(
    new Blob([body]).stream().pipeThrough(new CompressionStream("gzip")),
  ).bytes();
  const res = await fetch(`${base}/v1/sync/batches`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${host.key}`,
      "content-type": "application/json",
      "content-encoding": "gzip",
      "sentry-protocol": "1",
    },
    body: gz,
  });
  const answer = await res.json();
  assert.equal(res.status, 200, JSON.stringify(answer));
  assert.equal(answer.duplicates, 0);
}

/** The ids of the sessions the page lists, sorted. */
async function listed(page: Page): Promise<string[]> {
  const ids = await page.locator("#sessions .sess").evaluateAll((els) =>
    els.map((el) => el.getAttribute("data-session") ?? "")
  );
  return ids.sort();
}

/** Waits until the page lists exactly these sessions. */
async function waitListed(page: Page, ids: string[], what: string): Promise<void> {
  const want = [...ids].sort();
  let last: string[] = [];
  await waitFor(async () => {
    last = await listed(page);
    return JSON.stringify(last) === JSON.stringify(want);
  }, {
    what,
    timeoutMs: STEP_MS,
    detail: () => `listed ${JSON.stringify(last)}, want ${JSON.stringify(want)}`,
  });
}

/** The text of the host filter's button for `value` ("" for all hosts). */
function hostButton(page: Page, value: string) {
  return page.locator(`#hosts .host[data-host="${value}"]`);
}

/** Which store the collector runs on: SQLite in its data directory, or a PostgreSQL URL. */
type Store = { kind: "sqlite" } | { kind: "postgres"; url: string };

/**
 * `sentry serve` over the collector's journal (SQLite only): its /v1/hosts lists the sessions'
 * host names; with one host there is no filter to show. Uploads host b's first batch meanwhile.
 */
async function serveOverJournal(o: {
  sb: Sandbox;
  held: Held;
  data: string;
  token: string;
  browser: Browser;
  problems: string[];
  /** build-7's sessions, uploaded already. */
  first: string[];
  /** laptop-3's session, and the upload that brings it. */
  second: { id: string; upload: () => Promise<void> };
}): Promise<void> {
  const { sb, held, data, token, browser, problems, first, second } = o;
  const serve = sb.spawn(["serve", "--port", "0"], { env: { SENTRY_HOME: data } });
  const serving = /serving the API at (http:\/\/127\.0\.0\.1:\d+)/;
  await serve.waitForStderr(serving);
  const local = held.page = await openDashboard(browser, {
    base: serving.exec(serve.stderr)?.[1] ?? "",
    token,
    viewport: { width: 1366, height: 900 },
    problems,
  });
  await waitListed(local, first, "build-7's sessions on sentry serve");
  await local.waitForTimeout(300);
  assert.equal(await local.locator("#hosts-box").isHidden(), true, "one host: no host filter");
  // A second host's batch reaches the page through the journal and the stream.
  await second.upload();
  await hostButton(local, "laptop-3").waitFor();
  assert.match(await hostButton(local, "build-7").innerText(), /build-7\s+2 sessions/);
  assert.match(await hostButton(local, "").innerText(), /All hosts\s+3 sessions/);
  await hostButton(local, "laptop-3").click();
  await waitListed(local, [second.id], "laptop-3's session on sentry serve");
  assert.match(await local.evaluate(() => location.hash), /host=laptop-3/);
  // `sentry serve` stops with the page open: the page says so, and what to run, at once.
  const port = /:(\d+)$/.exec(serving.exec(serve.stderr)?.[1] ?? "")?.[1];
  const before = problems.length;
  Deno.kill(serve.pid, "SIGTERM");
  assert.equal(await serve.exit(), 0, serve.stderr);
  await stoppedBanner(local, "sentry serve", `sentry serve --port ${port}`);
  await local.context().close();
  // The page tries to reconnect to the stopped server, as it should: those refusals are expected.
  const after = problems.splice(before).filter((p) => !p.includes("ERR_CONNECTION_REFUSED"));
  problems.push(...after);
}

async function scenario(sb: Sandbox, held: Held, store: Store): Promise<void> {
  const data = sb.path("collector");
  const where = ["--data", data, ...(store.kind === "postgres" ? ["--store", store.url] : [])];
  const shot = store.kind === "postgres" ? "-pg" : "";
  const key = async (name: string) =>
    (await sb.ok(["server", "keys", "add", name, ...where])).trim();
  const a: Host = { id: ulid(), name: "build-7", key: await key("build-7") };
  const b: Host = { id: ulid(), name: "laptop-3", key: await key("laptop-3") };
  const server = sb.spawn(["server", "--port", "0", ...where]);
  const listening = /collector listening at (http:\/\/127\.0\.0\.1:\d+)/;
  await server.waitForStderr(listening);
  const base = listening.exec(server.stderr)?.[1] ?? "";
  const token = (await sb.ok(["server", "token", "--data", data])).trim();

  const a1: Upload = { id: ulid(), agent: "claude", events: 40 };
  const a2: Upload = { id: ulid(), agent: "codex", events: 25, ended: true };
  const b1: Upload = { id: ulid(), agent: "aider", events: 30 };
  await upload(base, a, batch(a, [a1, a2], 0));

  const browser = held.browser = await launchChromium();
  const problems: string[] = [];

  const uploadB = () => upload(base, b, batch(b, [b1], 42));
  if (store.kind === "sqlite") {
    await serveOverJournal({
      sb,
      held,
      data,
      token,
      browser,
      problems,
      first: [a1.id, a2.id],
      second: { id: b1.id, upload: uploadB },
    });
  } else {
    await uploadB();
  }

  // The collector: hosts with their key, last-seen time and dropped events.
  const page = held.page = await openDashboard(browser, {
    base,
    token,
    viewport: { width: 1366, height: 900 },
    problems,
  });
  await waitListed(page, [a1.id, a2.id, b1.id], "every host's sessions on the collector");
  await hostButton(page, b.id).waitFor();
  assert.equal(await page.locator("#hosts .host").count(), 3);
  const textA = await hostButton(page, a.id).innerText();
  assert.match(textA, /build-7\s+2 sessions/);
  assert.match(textA, /seen (just now|\d+ s ago) · key build-7/);
  assert.equal(await hostButton(page, a.id).locator(".warn").count(), 0);
  const textB = await hostButton(page, b.id).innerText();
  assert.match(textB, /laptop-3\s+1 session\b/);
  assert.match(textB, /key laptop-3/);
  assert.equal(await hostButton(page, b.id).locator(".warn").innerText(), "⚠ 42 events dropped");
  assert.equal(
    await hostButton(page, "").locator(".warn").innerText(),
    "⚠ 42 events dropped on 1 host",
  );
  assert.equal(await hostButton(page, "").getAttribute("aria-current"), "true");

  // One host: its sessions and agents only, and the selected session's feed is its own.
  await hostButton(page, a.id).click();
  await waitListed(page, [a1.id, a2.id], "build-7's sessions on the collector");
  assert.equal(await hostButton(page, a.id).getAttribute("aria-current"), "true");
  assert.deepEqual((await page.locator("#agents .agent b").allTextContents()).sort(), [
    "claude",
    "codex",
  ]);
  assert.match(await page.evaluate(() => location.hash), new RegExp(`host=${a.id}`));
  await page.locator("#sessions .sess.selected").waitFor();
  await page.locator("#feed .ev").first().waitFor();
  const targets = await page.locator("#feed .ev .target").allTextContents();
  assert.ok(targets.some((t) => t.startsWith("/srv/build-7/")), targets.join("\n"));
  assert.ok(!targets.some((t) => t.startsWith("/srv/laptop-3/")), targets.join("\n"));
  // The collector cannot signal another host's processes: its controls are off.
  for (const button of ["pause", "kill", "rollback"]) {
    assert.equal(await page.locator(`#btn-${button}`).isDisabled(), true, button);
  }

  // New sessions arrive live: the selected host's is listed; the other host's only changes its
  // count in the host filter.
  const a3: Upload = { id: ulid(), agent: "claude", events: 5 };
  const b2: Upload = { id: ulid(), agent: "aider", events: 5 };
  await upload(base, b, batch(b, [b2], 42));
  await upload(base, a, batch(a, [a3], 0));
  await waitListed(page, [a1.id, a2.id, a3.id], "build-7's new session");
  await hostButton(page, b.id).filter({ hasText: "2 sessions" }).waitFor();
  assert.deepEqual(await listed(page), [a1.id, a2.id, a3.id].sort());

  // A reload keeps the host (the hash) and the token (the tab's session storage).
  await page.reload();
  await page.locator("#conn[data-state=open]").waitFor();
  await waitListed(page, [a1.id, a2.id, a3.id], "build-7's sessions after a reload");
  await hostButton(page, a.id).and(page.locator("[aria-current=true]")).waitFor();
  await page.locator("#feed .ev").first().waitFor();
  await page.screenshot({ path: `${ARTIFACTS}collector-dashboard${shot}.png` });

  // A phone: the filter scrolls sideways like the lists, and the page does not.
  const phone = held.page = await openDashboard(browser, {
    base,
    token,
    viewport: { width: 390, height: 844 },
    problems,
  });
  await hostButton(phone, b.id).click();
  await waitListed(phone, [b1.id, b2.id], "laptop-3's sessions on a phone");
  await phone.locator("#feed .ev").first().waitFor();
  const overflow = await phone.evaluate<number>(
    "document.documentElement.scrollWidth - document.documentElement.clientWidth",
  );
  assert.ok(overflow <= 0, `the phone page scrolls sideways by ${overflow} px`);
  await phone.screenshot({ path: `${ARTIFACTS}collector-dashboard${shot}-phone.png` });

  // Back to every host.
  held.page = page;
  await hostButton(page, "").click();
  await waitListed(page, [a1.id, a2.id, a3.id, b1.id, b2.id], "every session again");
  assert.doesNotMatch(await page.evaluate(() => location.hash), /host=/);

  assert.deepEqual(problems, []);
  Deno.kill(server.pid, "SIGTERM");
  assert.equal(await server.exit(), 0, server.stderr);
  const port = /:(\d+)$/.exec(base)?.[1];
  await stoppedBanner(page, "sentry server", `sentry server --port ${port}`);
}

/** Waits for the banner of a page whose server stopped: who stopped, and the command to run. */
async function stoppedBanner(page: Page, by: string, serve: string): Promise<void> {
  await page.locator("#offline:not([hidden])").waitFor({ timeout: STEP_MS });
  assert.equal(
    (await page.locator("#offline-text").innerText()).split(". ")[0],
    `${by} stopped serving this page`,
  );
  assert.equal(await page.locator("#offline-cmd").innerText(), serve);
  assert.equal(await page.locator("#conn").getAttribute("data-state"), "ended");
}

browserTest({
  name:
    "the dashboard filters a collector's sessions by host in Chromium, and shows each host's dropped events",
  file: "collector_dashboard_test",
  failureShot: "collector-dashboard-failure.png",
  scenario: (sb, held) => scenario(sb, held, { kind: "sqlite" }),
});

browserTest({
  name:
    "[postgres] the same dashboard scenario over `sentry server --store postgres://` (a throwaway cluster)",
  file: "collector_dashboard_test",
  failureShot: "collector-dashboard-pg-failure.png",
  skip: postgresSkip(),
  async scenario(sb, held) {
    const pg = await startPostgres();
    try {
      await scenario(sb, held, { kind: "postgres", url: pg.url });
    } finally {
      await pg.close();
    }
  },
});

Deno.test("collectorHosts() merges a host's keys, and localHosts() keeps the local API's hosts by name", () => {
  const id = "01JBZ0000000000000000HOSTA";
  const other = "01JBZ0000000000000000HOSTB";
  const hosts = collectorHosts([
    {
      host_id: id,
      name: "old-name",
      key_name: "k1",
      last_seen: "2026-01-01T00:00:00.000Z",
      sessions: 2,
      dropped: 7,
    },
    {
      host_id: other,
      name: "build-7",
      key_name: "k3",
      last_seen: "2026-01-02T00:00:00.000Z",
      sessions: 1,
      dropped: 0,
    },
    {
      host_id: id,
      name: "build-7",
      key_name: "k2",
      last_seen: "2026-01-03T00:00:00.000Z",
      sessions: 3,
      dropped: 5,
    },
  ]);
  assert.deepEqual(hosts, [
    {
      value: id,
      name: "build-7",
      label: "build-7 (…0HOSTA)",
      sessions: 5,
      lastSeen: "2026-01-03T00:00:00.000Z",
      dropped: 7,
      keys: ["k1", "k2"],
    },
    {
      value: other,
      name: "build-7",
      label: "build-7 (…0HOSTB)",
      sessions: 1,
      lastSeen: "2026-01-02T00:00:00.000Z",
      dropped: 0,
      keys: ["k3"],
    },
  ]);
  assert.deepEqual(
    localHosts([{ name: "b", sessions: 2 }, { name: "a", sessions: 1 }]).map((x) => [
      x.value,
      x.label,
      x.sessions,
      x.lastSeen,
    ]),
    [["b", "b", 2, null], ["a", "a", 1, null]],
  );
  const now = Date.parse("2026-01-03T12:00:00.000Z");
  assert.deepEqual(
    [
      "2026-01-03T12:00:05.000Z",
      "2026-01-03T11:59:58.000Z",
      "2026-01-03T11:59:18.000Z",
      "2026-01-03T11:55:00.000Z",
      "2026-01-03T09:00:00.000Z",
      "2025-12-30T12:00:00.000Z",
    ].map((iso) => ago(iso, now)),
    ["just now", "just now", "42 s ago", "5 min ago", "3 h ago", "4 d ago"],
  );
});
