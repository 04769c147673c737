/**
 * The dashboard's filters, its search and its life after the agent, in a real headless Chromium
 * (Debian's, driven by playwright-core; no browser is downloaded), on the API that a real
 * `sentry run --sensor poll` serves. The agent writes a rare file first, then hundreds more, and
 * reads the fake SSH key (a violation); the test writes files into the workspace beside it
 * (unattributed events). On the page: the local `/v1/hosts` answers (no 404), "This agent only"
 * and "Violations only" show exactly the journal's attributed events and violations, and the
 * search finds the rare file on the server though it is not among the events loaded. Then the
 * agent exits: the page says so with the exact command that serves the journal there again,
 * keeps what it holds browsable, and, once the test runs that command, reconnects by itself and
 * searches on the server again. It saves tests/artifacts/dashboard-filters.png and
 * dashboard-offline.png, and dashboard-filters-failure.png when it fails. Skipped, with the reason
 * on stderr, when /usr/bin/chromium is missing.
 * @module
 */
import assert from "node:assert/strict";
import type { Page } from "playwright-core";
import type { AgentEvent } from "../src/events/mod.ts";
import { matchesSearch } from "../src/api/assets/view.js";
import { ARTIFACTS, browserTest, type Held, launchChromium, openDashboard } from "./_browser.ts";
import { PYTHON, type Sandbox, waitFor } from "./_helpers.ts";

const API_LINE = /API and dashboard at (http:\/\/127\.0\.0\.1:(\d+))/;
/** The rare file the agent writes first, so that the newest 200 events do not hold it. */
const NEEDLE = "needle-7f3a.txt";
/** Files the agent writes after it. */
const FILES = 320;
/** Errors Chromium logs for requests to an API that is gone. */
const GONE =
  /ERR_CONNECTION_REFUSED|ERR_CONNECTION_RESET|ERR_EMPTY_RESPONSE|ERR_CONNECTION_CLOSED|ERR_INCOMPLETE_CHUNKED_ENCODING/;

function agentScript(sb: Sandbox): Promise<string> {
  return sb.write(
    "agent.py",
    `
import os, sys, time
print(os.getpid(), flush=True)
with open(${JSON.stringify(NEEDLE)}, "w") as f:
    f.write("needle\\n")
time.sleep(0.3)
for i in range(${FILES}):
    with open(f"f_{i:03}.txt", "w") as f:
        f.write("x\\n")
    if i % 40 == 0:
        time.sleep(0.05)
# A violation: the agent reads the SSH key, and holds it open long enough to be seen.
with open(${JSON.stringify(sb.sshKey)}) as f:
    f.read()
    time.sleep(0.6)
print("ready", flush=True)
while not os.path.exists(${JSON.stringify(sb.path("go"))}):
    time.sleep(0.05)
sys.exit(3)
`,
  );
}

async function feedIds(page: Page): Promise<string[]> {
  return await page.locator("#feed .ev").evaluateAll((rows) =>
    rows.map((r) => r.getAttribute("data-id") ?? "")
  );
}

/** Waits until the feed shows exactly `want` (ids, in any order). */
async function waitFeed(page: Page, want: readonly string[], what: string): Promise<void> {
  const sorted = [...want].sort();
  let shown: string[] = [];
  await waitFor(async () => {
    shown = (await feedIds(page)).sort();
    return shown.length === sorted.length && shown.every((id, i) => id === sorted[i]);
  }, {
    what,
    detail: () =>
      `shown ${shown.length}, want ${sorted.length}; missing ${
        sorted.filter((id) => !shown.includes(id)).slice(0, 5)
      }; extra ${shown.filter((id) => !sorted.includes(id)).slice(0, 5)}`,
  });
}

async function scenario(sb: Sandbox, held: Held): Promise<void> {
  const run = sb.spawn([
    "run",
    "--policy",
    "coding-agent",
    "--mode",
    "alert",
    "--sensor",
    "poll",
    "--api-port",
    "0",
    "--name",
    "search-bot",
    "--",
    PYTHON,
    await agentScript(sb),
  ]);
  await run.waitForStderr(API_LINE, 20_000);
  const [, base = "", port = ""] = API_LINE.exec(run.stderr) ?? [];
  await run.waitForStdout(/^ready$/m, 30_000);
  // Changes beside the agent: inotify sees them, and nothing ties them to the agent.
  for (let i = 0; i < 4; i++) await sb.write(`${sb.workspace}/by-user-${i}.txt`, "user\n");
  let events: AgentEvent[] = [];
  await waitFor(async () => {
    events = await sb.events();
    return events.some((e) => e.target.endsWith("by-user-3.txt")) &&
      events.some((e) => e.target === sb.sshKey && e.pid !== null) &&
      events.filter((e) => e.kind.startsWith("file.")).length > FILES;
  }, { what: "the agent's and the user's files in the journal", timeoutMs: 20_000 });
  await new Promise((r) => setTimeout(r, 500));
  events = await sb.events();
  const newest = [...events].reverse();
  const attributed = newest.filter((e) => e.pid !== null);
  const violations = newest.filter((e) => e.pid !== null && e.verdict === "deny");
  assert.ok(newest.some((e) => e.pid === null), "unattributed events exist");
  assert.ok(violations.length > 0, "the agent has a violation");
  /** The ids of the session's events a search finds, as the server's rule decides. */
  const found = (q: string) => newest.filter((e) => matchesSearch(e, q)).map((e) => e.id);
  const needles = found(NEEDLE);
  assert.ok(needles.length > 0, "the rare file is journaled");
  assert.ok(
    needles.every((id) => newest.findIndex((e) => e.id === id) >= 200),
    "the rare file is older than the newest 200 events",
  );

  const token = (await sb.ok(["token"])).trim();
  const browser = held.browser = await launchChromium();
  const problems: string[] = [];
  const hostAnswers: number[] = [];
  const page = held.page = await openDashboard(browser, {
    base,
    token,
    viewport: { width: 1366, height: 900 },
    problems,
  });
  page.on("response", (res) => {
    if (new URL(res.url()).pathname === "/v1/hosts") hostAnswers.push(res.status());
  });
  await page.locator("#s-agent", { hasText: "search-bot" }).waitFor();
  await page.locator("#feed .ev").first().waitFor();
  // The local /v1/hosts answers: one host, so no host filter.
  const hosts = await page.evaluate(
    async (t) =>
      await (await fetch("/v1/hosts", { headers: { authorization: `Bearer ${t}` } })).json(),
    token,
  );
  assert.equal(hosts.collector, false);
  assert.equal(hosts.hosts.length, 1);
  assert.equal(await page.locator("#hosts-box").isHidden(), true);

  // Before any search, the rare file is not among the events loaded.
  await waitFor(async () => (await feedIds(page)).length === 200, { what: "a page of 200" });
  assert.ok(!(await feedIds(page)).some((id) => needles.includes(id)));

  // This agent only: the newest 200 attributed events, none unattributed.
  await page.locator("#f-agent").check();
  await waitFeed(page, attributed.slice(0, 200).map((e) => e.id), "only the agent's events");
  // Violations only: the denied actions of the agent's processes, as the report counts them.
  await page.locator("#f-violations").check();
  assert.equal(await page.locator("#f-verdict").isDisabled(), true);
  await waitFeed(page, violations.map((e) => e.id), "only the agent's violations");
  assert.deepEqual(
    (await sb.report()).violations.map((e) => e.id).sort(),
    violations.map((e) => e.id).sort(),
  );
  await page.locator("#f-violations").uncheck();
  await page.locator("#f-agent").uncheck();
  await waitFor(async () => (await feedIds(page)).length === 200, { what: "the filters off" });

  // The search runs on the server over the whole session: the rare file is found.
  await page.locator("#f-search").fill("NEEDLE-7f3a");
  await waitFeed(page, needles, "the rare file found by the server's search");
  await page.locator("#feed-note", { hasText: "Searched the whole session." }).waitFor();
  for (const target of await page.locator("#feed .ev .target").allTextContents()) {
    assert.equal(target, `${sb.workspace}/${NEEDLE}`);
  }
  // Several words: each must match (here the kind and the path).
  assert.ok(found(`file.create ${NEEDLE}`).length > 0);
  assert.ok(found(`file.create ${NEEDLE}`).length < needles.length || needles.length === 1);
  await page.locator("#f-search").fill(`FILE.create ${NEEDLE}`);
  await waitFeed(page, found(`file.create ${NEEDLE}`), "the kind and path words");
  await page.locator("#f-search").fill("no-such-thing-anywhere");
  await waitFeed(page, [], "no match");
  await page.locator("#feed .empty", { hasText: "No event matches." }).waitFor();
  await page.locator("#f-search").fill("");
  await waitFor(async () => (await feedIds(page)).length === 200, { what: "the search cleared" });
  await page.screenshot({ path: `${ARTIFACTS}dashboard-filters.png` });
  assert.deepEqual(problems, []);

  // The agent exits: `sentry run` stops, and the page says what happened and what to run.
  await sb.write("go", "go\n");
  assert.equal(await run.exit(), 3, run.stderr);
  const serve = `SENTRY_HOME=${sb.data} sentry serve --port ${port}`;
  await page.locator("#offline").waitFor();
  assert.equal(await page.locator("#offline-cmd").textContent(), serve);
  const said = await page.locator("#offline-text").textContent() ?? "";
  assert.match(said, /The agent search-bot exited \(exit code 3\), and sentry run stopped/);
  await page.locator("#conn[data-state=ended]").waitFor();
  await page.locator("#s-state", { hasText: "ended" }).waitFor();
  assert.match(await page.locator("#s-meta").innerText(), /exit code\s+3/);
  for (const button of ["pause", "resume", "kill", "rollback"]) {
    assert.equal(await page.locator(`#btn-${button}`).isDisabled(), true, button);
  }
  // What the page holds stays browsable: an event's detail, and the filters over what is loaded.
  await page.locator("#feed .ev button").first().click();
  await page.locator("#detail").waitFor();
  await page.locator("#d-close").click();
  await page.locator("#f-search").fill("f_31");
  await waitFor(async () => {
    const targets = await page.locator("#feed .ev .target").allTextContents();
    return targets.length > 0 && targets.every((t) => t.includes("f_31"));
  }, { what: "the loaded events filtered offline" });
  await page.locator("#feed-note", { hasText: /^Offline: filtering the \d+ events loaded\.$/ })
    .waitFor();
  await page.screenshot({ path: `${ARTIFACTS}dashboard-offline.png` });
  await page.waitForTimeout(1500);
  assert.equal(await page.locator("#offline").isVisible(), true, "still offline, not retrying");

  // The command the page gave, run as given (the sandbox's environment holds SENTRY_HOME).
  const [, home, servePort] = /^SENTRY_HOME=(\S+) sentry serve --port (\d+)$/.exec(serve) ?? [];
  assert.equal(home, sb.data);
  const served = sb.spawn(["serve", "--port", servePort ?? ""]);
  await served.waitForStderr(/serving the API at/);
  await page.locator("#offline").waitFor({ state: "hidden", timeout: 20_000 });
  await page.locator("#conn[data-state=open]").waitFor();
  await page.locator("#s-state", { hasText: "ended" }).waitFor();
  // The search runs on the server again, over the whole session.
  await page.locator("#f-search").fill("needle-7F3A");
  await waitFeed(page, needles, "the rare file found through sentry serve");
  await page.locator("#feed-note", { hasText: "Searched the whole session." }).waitFor();
  assert.equal(await page.locator("#btn-rollback").isDisabled(), false);

  assert.ok(hostAnswers.length > 0 && hostAnswers.every((s) => s === 200), `${hostAnswers}`);
  assert.deepEqual(problems.filter((p) => !GONE.test(p)), []);
  Deno.kill(served.pid, "SIGTERM");
  assert.equal(await served.exit(), 0, served.stderr);
}

browserTest({
  name:
    "the dashboard filters the agent's events and violations, searches the whole session on the server, and keeps working after the agent exits, in Chromium",
  file: "dashboard_filters_browser_test",
  failureShot: "dashboard-filters-failure.png",
  scenario,
});

/** `sentry run` killed outright: no `closing` message, yet the page says what to run. */
async function killedScenario(sb: Sandbox, held: Held): Promise<void> {
  const agent = await sb.write(
    "idle.py",
    `
import os, time
print(os.getpid(), flush=True)
i = 0
while True:
    with open(f"tick_{i % 3}.txt", "w") as f:
        f.write(str(i))
    i += 1
    time.sleep(0.2)
`,
  );
  const run = sb.spawn([
    "run",
    "--mode",
    "alert",
    "--api-port",
    "0",
    "--name",
    "crash-bot",
    "--",
    PYTHON,
    agent,
  ]);
  await run.waitForStderr(API_LINE, 20_000);
  await run.waitForStdout(/^\d+$/m);
  const [, base = "", port = ""] = API_LINE.exec(run.stderr) ?? [];
  const token = (await sb.ok(["token"])).trim();
  const browser = held.browser = await launchChromium();
  const problems: string[] = [];
  const page = held.page = await openDashboard(browser, {
    base,
    token,
    viewport: { width: 390, height: 844 },
    problems,
  });
  await page.locator("#s-state", { hasText: "running" }).waitFor();
  await page.locator("#feed .ev").first().waitFor();

  run.kill("SIGKILL");
  await run.exit();
  await page.locator("#offline").waitFor({ timeout: 20_000 });
  assert.equal(
    await page.locator("#offline-text").textContent(),
    "sentry run stopped serving this page: its process is gone. The journal keeps everything it " +
      "recorded. To browse it here again, run this on the host; the page reconnects by itself:",
  );
  assert.equal(
    await page.locator("#offline-cmd").textContent(),
    `SENTRY_HOME=${sb.data} sentry serve --port ${port}`,
  );
  await page.locator("#conn[data-state=ended]").waitFor();
  const overflow = await page.evaluate<number>(
    "document.documentElement.scrollWidth - document.documentElement.clientWidth",
  );
  assert.ok(overflow <= 0, `the phone page scrolls sideways by ${overflow} px`);
  await page.screenshot({ path: `${ARTIFACTS}dashboard-offline-phone.png` });

  // `sentry serve` finds the session's Sentry gone and marks it crashed; the page shows it.
  const served = sb.spawn(["serve", "--port", port]);
  await served.waitForStderr(/serving the API at/);
  await page.locator("#offline").waitFor({ state: "hidden", timeout: 20_000 });
  await page.locator("#conn[data-state=open]").waitFor();
  await page.locator("#s-state", { hasText: "crashed" }).waitFor();
  assert.deepEqual(problems.filter((p) => !GONE.test(p)), []);
  Deno.kill(served.pid, "SIGTERM");
  assert.equal(await served.exit(), 0, served.stderr);
}

browserTest({
  name:
    "the dashboard says what to run when `sentry run` is killed outright, then reconnects to `sentry serve`, in Chromium",
  file: "dashboard_filters_browser_test",
  failureShot: "dashboard-killed-failure.png",
  scenario: killedScenario,
});
