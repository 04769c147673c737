/**
 * Shared parts of the real-browser tests: Debian's Chromium driven by playwright-core (no
 * browser is ever downloaded), a test wrapper that skips visibly without Chromium, bounds the
 * whole test and cleans up, and opening the dashboard with a token while watching for requests
 * to other origins, tokens in URLs and console errors.
 * @module
 */
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { type Browser, chromium, type Page } from "playwright-core";
import { type Sandbox, withSandbox } from "./_helpers.ts";

/** Debian's Chromium. */
export const CHROMIUM = "/usr/bin/chromium";
/** Whether the browser tests can run. */
export const HAVE_CHROMIUM: boolean = existsSync(CHROMIUM);
/** Where screenshots go (git-ignored). */
export const ARTIFACTS: string = fileURLToPath(new URL("./artifacts/", import.meta.url));
/** Each browser action or wait. */
export const STEP_MS = 15_000;
/** The whole test, browser and processes included, fails after this long. */
const DEADLINE_MS = 120_000;

/** What a scenario holds, for the clean-up and a screenshot on failure. */
export interface Held {
  browser?: Browser;
  page?: Page;
}

/** Starts headless Chromium. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    timeout: STEP_MS,
  });
}

/** What {@link browserTest} runs. */
export interface BrowserTestOptions {
  name: string;
  /** The test file's name, for the skip line. */
  file: string;
  /** The screenshot saved in {@link ARTIFACTS} when the scenario fails. */
  failureShot: string;
  /** The scenario; it puts its browser and page in `held`. */
  scenario: (sb: Sandbox, held: Held) => Promise<void>;
  /** Why the test cannot run here besides a missing Chromium (printed), or null. */
  skip?: string | null;
}

/**
 * Registers a browser test: skipped (with the reason on stderr) without Chromium, bounded to
 * two minutes, in a sandbox, with a screenshot on failure (taken while the agent and servers
 * still run) and the browser always closed.
 */
export function browserTest(options: BrowserTestOptions): void {
  const skip = HAVE_CHROMIUM
    ? options.skip ?? null
    : `${CHROMIUM} is missing (apt-get install chromium)`;
  if (skip !== null) {
    Deno.stderr.writeSync(new TextEncoder().encode(`${options.file}: skipped: ${skip}\n`));
  }
  Deno.test({
    name: options.name,
    ignore: skip !== null,
    // playwright-core keeps a pipe and timers of its own until the browser is gone.
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      await Deno.mkdir(ARTIFACTS, { recursive: true });
      let timer: ReturnType<typeof setTimeout> | undefined;
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`The test took more than ${DEADLINE_MS} ms`)),
          DEADLINE_MS,
        );
      });
      await withSandbox(async (sb) => {
        const held: Held = {};
        try {
          await Promise.race([deadline, options.scenario(sb, held)]);
        } catch (error) {
          await held.page?.screenshot({ path: `${ARTIFACTS}${options.failureShot}` })
            .catch(() => {});
          throw error;
        } finally {
          clearTimeout(timer);
          await held.browser?.close().catch(() => {});
        }
      });
    },
  });
}

/** Where {@link openDashboard} points and how it looks. */
export interface OpenDashboardOptions {
  base: string;
  token: string;
  viewport: { width: number; height: number };
  /** Collects what must not happen: other origins, tokens in URLs, console and page errors. */
  problems: string[];
}

/** Opens the dashboard in a new context (a phone one below 600 px) and connects with the token. */
export async function openDashboard(
  browser: Browser,
  options: OpenDashboardOptions,
): Promise<Page> {
  const { problems } = options;
  const context = await browser.newContext({
    viewport: options.viewport,
    ...(options.viewport.width < 600 ? { isMobile: true, hasTouch: true } : {}),
  });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  const origin = new URL(options.base).origin;
  page.on("request", (request) => {
    const url = request.url();
    if (new URL(url).origin !== origin) problems.push(`request to another origin: ${url}`);
    if (url.includes(options.token)) problems.push(`the token is in a URL: ${url}`);
  });
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console error: ${message.text()}`);
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  await page.goto(`${options.base}/`);
  await page.locator("#token").fill(options.token);
  await page.getByRole("button", { name: "Connect" }).click();
  await page.locator("#conn[data-state=open]").waitFor();
  return page;
}
