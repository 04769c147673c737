/**
 * The dashboard in a real headless Chromium (Debian's, driven by playwright-core; no browser is
 * downloaded): a real agent runs under `sentry run`, `sentry serve` serves the journal, and the
 * test enters the token, watches live events arrive, opens an event, filters, pauses the agent
 * (checked thread by thread in /proc), resumes it, cancels a rollback after its dry run, kills the
 * agent and rolls its files back. It saves screenshots in tests/artifacts/: dashboard.png,
 * dashboard-detail.png (laptop) and dashboard-phone.png (390x844), and dashboard-failure.png when
 * it fails. Skipped, with the reason on stderr, when /usr/bin/chromium is missing.
 * @module
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import type { Browser, Page } from "playwright-core";
import {
  ARTIFACTS,
  browserTest,
  type Held,
  launchChromium,
  openDashboard,
  type OpenDashboardOptions,
  STEP_MS,
} from "./_browser.ts";
import { isGone, PYTHON, type Sandbox, waitFor } from "./_helpers.ts";

/**
 * An agent that keeps working until it is killed: it writes and reads files in
 * its workspace, reads the sandbox's fake SSH key now and then (denied: the feed gets colour),
 * runs a short child process, and holds a second thread and a long-lived child, so that a pause
 * has several processes and threads to stop.
 */
function agentScript(sb: Sandbox): Promise<string> {
  return sb.write(
    "agent.py",
    `
import os, subprocess, sys, threading, time
def spin():
    while True:
        time.sleep(0.05)
threading.Thread(target=spin, daemon=True).start()
child = subprocess.Popen(["sleep", "120"])
print(os.getpid(), child.pid, flush=True)
i = 0
while True:
    with open(f"out_{i % 4}.txt", "w") as f:
        f.write(f"line {i}\\n")
    with open(f"out_{(i + 1) % 4}.txt", "a+") as f:
        f.seek(0)
        f.read()
    if i % 15 == 3:
        with open(${JSON.stringify(sb.sshKey)}) as f:
            f.read()
            time.sleep(0.4)
    if i % 25 == 10:
        subprocess.run(["true"])
    i += 1
    time.sleep(0.1)
`,
  );
}

/** Every thread of a process, with its state letter from /proc (none when it is gone). */
function threadStates(pid: number): string[] {
  const out: string[] = [];
  try {
    for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
      const status = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/status`);
      out.push(/^State:\s+(\S)/m.exec(status)?.[1] ?? "?");
    }
  } catch {
    // Gone.
  }
  return out;
}

function describeThreads(pids: readonly number[]): string {
  return pids.map((p) => `${p}:[${threadStates(p).join("")}]`).join(" ");
}

/** Waits for the top row of the feed to be an event that was not in `seen`. */
async function newTopRow(page: Page, seen: ReadonlySet<string>): Promise<string> {
  const deadline = Date.now() + STEP_MS;
  while (Date.now() < deadline) {
    const id = await page.locator("#feed .ev").first().getAttribute("data-id").catch(() => null);
    if (id !== null && !seen.has(id)) return id;
    await page.waitForTimeout(100);
  }
  throw new Error("No new event reached the feed");
}

async function feedIds(page: Page): Promise<Set<string>> {
  const ids = await page.locator("#feed .ev").evaluateAll((rows) =>
    rows.map((r) => r.getAttribute("data-id") ?? "")
  );
  return new Set(ids);
}

/** The scenario: a real agent and `sentry serve`, driven through the dashboard. */
/** Opens the dashboard, connects, and checks the token is kept in session storage. */
async function connect(browser: Browser, options: OpenDashboardOptions): Promise<Page> {
  const page = await openDashboard(browser, options);
  assert.equal(
    await page.evaluate(() => sessionStorage.getItem("sentry.token")),
    options.token,
    "the token is kept in session storage",
  );
  return page;
}

async function scenario(sb: Sandbox, held: Held): Promise<void> {
  const run = sb.spawn([
    "run",
    "--policy",
    "coding-agent",
    "--mode",
    "alert",
    "--no-api",
    "--name",
    "file-bot",
    "--",
    PYTHON,
    await agentScript(sb),
  ]);
  await run.waitForStdout(/^\d+ \d+$/m, 20_000);
  const pids = (/^(\d+) (\d+)$/m.exec(run.stdout) ?? []).slice(1).map(Number);
  assert.equal(pids.length, 2);
  const token = (await sb.ok(["token"])).trim();
  const serve = sb.spawn(["serve", "--port", "0"]);
  const line = /serving the API at (http:\/\/127\.0\.0\.1:\d+)/;
  await serve.waitForStderr(line);
  const base = line.exec(serve.stderr)?.[1] ?? "";

  const browser = held.browser = await launchChromium();
  const problems: string[] = [];
  const page = await connect(browser, {
    base,
    token,
    viewport: { width: 1366, height: 900 },
    problems,
  });
  held.page = page;

  // The session is listed and selected, with its agent and state.
  await page.locator("#sessions .sess.selected").waitFor();
  assert.equal(await page.locator("#s-agent").textContent(), "file-bot");
  await page.locator("#s-state", { hasText: "running" }).waitFor();

  // Live events arrive in the feed.
  await page.locator("#feed .ev").first().waitFor();
  const before = await feedIds(page);
  const live = await newTopRow(page, before);
  assert.ok(!before.has(live));

  // An event's detail: its rule, risk factors and response, as the journal has them.
  const denied = page.locator("#feed .ev.deny").first();
  await denied.waitFor();
  const deniedId = await denied.getAttribute("data-id");
  await denied.locator("button").click();
  await page.locator("#detail").waitFor();
  const events = await sb.events();
  const event = events.find((e) => e.id === deniedId);
  assert.ok(event, `event ${deniedId} is in the journal`);
  assert.equal(event.target, sb.sshKey);
  const detail = await page.locator("#d-body").innerText();
  assert.ok(detail.includes(event.rule), detail);
  assert.ok(detail.includes(event.response), detail);
  assert.ok(event.factors.length > 0);
  for (const factor of event.factors) assert.ok(detail.includes(factor.reason), detail);
  assert.equal(
    await page.locator(".factors .total .pts").textContent(),
    String(event.risk),
  );
  await page.screenshot({ path: `${ARTIFACTS}dashboard-detail.png` });
  await page.locator("#d-close").click();
  await page.locator("#detail").waitFor({ state: "hidden" });

  // Filters: only denied events, then only a search match.
  await page.locator("#f-verdict").selectOption("deny");
  await waitFor(async () => {
    const rows = await page.locator("#feed .ev").evaluateAll((els) =>
      els.map((el) => el.className)
    );
    return rows.length > 0 && rows.every((c) => c.split(" ").includes("deny"));
  }, { what: "only denied events in the feed" });
  await page.locator("#f-verdict").selectOption("");
  await page.locator("#f-search").fill("out_3.txt");
  await waitFor(async () => {
    const targets = await page.locator("#feed .ev .target").allTextContents();
    return targets.length > 0 && targets.every((t) => t.endsWith("/out_3.txt"));
  }, { what: "only events on out_3.txt in the feed" });
  await page.locator("#f-search").fill("");

  // Pause, confirmed in the dialog: every thread of every process is stopped.
  assert.ok(pids.every((p) => threadStates(p).length > 0), describeThreads(pids));
  await page.locator("#btn-pause").click();
  await page.locator("#dialog[open]").waitFor();
  await page.locator("#dialog-ok").click();
  await waitFor(
    () => pids.every((p) => threadStates(p).every((s) => s === "T")),
    {
      what: "every thread of the agent to be stopped",
      detail: () => describeThreads(pids),
    },
  );
  assert.ok(threadStates(pids[0] ?? 0).length >= 2, "the agent has two threads");
  await page.locator("#s-state", { hasText: "paused" }).waitFor();
  await page.locator("#toast", { hasText: "Paused" }).waitFor();
  assert.equal(await page.locator("#btn-pause").isDisabled(), true);

  // Resume: the threads run again, and so does the feed.
  await page.locator("#btn-resume").click();
  await page.locator("#dialog[open]").waitFor();
  await page.locator("#dialog-ok").click();
  await waitFor(
    () => pids.every((p) => threadStates(p).every((s) => s !== "T" && s !== "t")),
    {
      what: "every thread of the agent to run again",
      detail: () => describeThreads(pids),
    },
  );
  await page.locator("#s-state", { hasText: "running" }).waitFor();
  await newTopRow(page, await feedIds(page));
  await page.locator("#timeline li", { hasText: "resume" }).waitFor();
  await page.screenshot({ path: `${ARTIFACTS}dashboard.png` });

  // A rollback shows its dry run first; cancelling it changes nothing.
  await page.locator("#btn-rollback").click();
  await page.locator("#dialog[open] .plan li", { hasText: "out_0.txt" }).first()
    .waitFor();
  await page.locator("#dialog-cancel").click();
  await page.locator("#dialog[open]").waitFor({ state: "hidden" });
  assert.ok(existsSync(`${sb.workspace}/out_0.txt`));
  assert.ok(pids.every((p) => !threadStates(p).includes("T")), describeThreads(pids));

  // The same page on a phone.
  const phone = await connect(browser, {
    base,
    token,
    viewport: { width: 390, height: 844 },
    problems,
  });
  held.page = phone;
  await phone.locator("#feed .ev").first().waitFor();
  await phone.locator("#timeline li").nth(1).waitFor();
  const overflow = await phone.evaluate<number>(
    "document.documentElement.scrollWidth - document.documentElement.clientWidth",
  );
  assert.ok(overflow <= 0, `the phone page scrolls sideways by ${overflow} px`);
  await phone.screenshot({ path: `${ARTIFACTS}dashboard-phone.png` });
  // Both pages still hold their live stream.
  for (const p of [page, phone]) await p.locator("#conn[data-state=open]").waitFor();

  // Kill, confirmed: the tree is gone, and the session says so.
  held.page = page;
  await page.locator("#btn-kill").click();
  await page.locator("#dialog[open]").waitFor();
  await page.locator("#dialog-ok").click();
  await waitFor(() => pids.every((p) => threadStates(p).length === 0 || isGone(p)), {
    what: "the agent's processes to be gone",
    detail: () => describeThreads(pids),
  });
  await page.locator("#s-state", { hasText: "killed" }).waitFor();

  // A real rollback of the ended session: the files the agent created are removed.
  const created = [0, 1, 2, 3].map((i) => `${sb.workspace}/out_${i}.txt`);
  assert.ok(created.every((f) => existsSync(f)));
  await page.locator("#btn-rollback").click();
  await page.locator("#dialog[open] .plan li", { hasText: "out_0.txt" }).first()
    .waitFor();
  await page.locator("#dialog-ok").click();
  await page.locator("#toast", { hasText: "Rolled back" }).waitFor();
  assert.deepEqual(created.filter((f) => existsSync(f)), []);
  await page.locator("#timeline li", { hasText: /rollback: ok by api \(\d+ restored, 4 removed\)/ })
    .waitFor();

  assert.deepEqual(problems, []);
}

browserTest({
  name:
    "the dashboard shows live events in Chromium, and its Pause, Resume, Kill and Roll back buttons act on the agent",
  file: "dashboard_browser_test",
  failureShot: "dashboard-failure.png",
  scenario,
});
