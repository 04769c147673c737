/**
 * POSTs a JSON body with bounded retries: exponential back-off with jitter, `Retry-After`
 * honoured, a time limit per attempt, and an abort signal that ends everything at shutdown.
 *
 * @module
 */

/** The longest wait between two attempts, whether from back-off or from `Retry-After`. */
export const MAX_RETRY_DELAY_MS = 300_000;

/** The back-off's ceiling when the server gives no `Retry-After`. */
const MAX_BACKOFF_MS = 30_000;

/** What {@link postJson} needs. */
export interface PostOptions {
  url: string;
  headers: Readonly<Record<string, string>>;
  /** One attempt's time limit, response body included. */
  timeoutMs: number;
  /** Attempts after the first. */
  maxRetries: number;
  /** The first back-off; it doubles on each retry. */
  backoffMs: number;
  /** Which HTTP statuses are worth another attempt. Network errors and timeouts always are. */
  retryable: (status: number) => boolean;
  /** Aborts the attempt in flight and any wait: the outputs are closing. */
  signal: AbortSignal;
  /** Jitter's randomness, in [0, 1). */
  random: () => number;
  /** A connection pool, closed with the outputs. */
  client?: Deno.HttpClient;
  /** Called before each retry. */
  onRetry?: () => void;
}

/** How a POST ended. */
export interface PostResult {
  ok: boolean;
  /** The last HTTP status, or null when no response came. */
  status: number | null;
  /** The last response body (empty when none). */
  body: string;
  /** Why it failed, in words, such as `HTTP 404` or `timed out after 5000 ms`. */
  error: string | null;
}

/** Parses `Retry-After`: delay-seconds or an HTTP date. Returns milliseconds, or null. */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | null {
  if (value === null) return null;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

/** The back-off before retry number `retry` (0-based): half fixed, half random. */
export function backoffDelay(
  retry: number,
  options: { baseMs: number; random: () => number },
): number {
  const ceiling = Math.min(MAX_BACKOFF_MS, options.baseMs * 2 ** retry);
  return Math.round(ceiling / 2 + options.random() * ceiling / 2);
}

/** Waits, or stops early when the signal aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

/**
 * POSTs `body` as JSON until a response that is not worth retrying, or until the retries run
 * out. Never throws: the result says how it went.
 */
export async function postJson(body: string, options: PostOptions): Promise<PostResult> {
  let last: PostResult = { ok: false, status: null, body: "", error: "not sent" };
  for (let attempt = 0;; attempt++) {
    if (options.signal.aborted) return { ...last, ok: false, error: "closed before delivery" };
    const { retryAfterMs, ...result } = await attemptOnce(body, options);
    last = result;
    if (last.ok) return last;
    const retryable = last.status === null
      ? !options.signal.aborted
      : options.retryable(last.status);
    if (!retryable || attempt >= options.maxRetries) return last;
    const delay = Math.min(
      MAX_RETRY_DELAY_MS,
      retryAfterMs ?? backoffDelay(attempt, { baseMs: options.backoffMs, random: options.random }),
    );
    options.onRetry?.();
    await sleep(delay, options.signal);
  }
}

async function attemptOnce(
  body: string,
  options: PostOptions,
): Promise<PostResult & { retryAfterMs: number | null }> {
  const timeout = new AbortController();
  const timer = setTimeout(() => timeout.abort(), options.timeoutMs);
  const signal = AbortSignal.any([timeout.signal, options.signal]);
  try {
    const init: RequestInit & { client?: Deno.HttpClient } = {
      method: "POST",
      headers: { "content-type": "application/json", ...options.headers },
      body,
      signal,
      redirect: "manual",
    };
    if (options.client !== undefined) init.client = options.client;
    const response = await fetch(options.url, init);
    const text = await response.text();
    const ok = response.status >= 200 && response.status < 300;
    return {
      ok,
      status: response.status,
      body: text,
      error: ok ? null : `HTTP ${response.status}${reasonOf(text)}`,
      retryAfterMs: parseRetryAfter(response.headers.get("retry-after")),
    };
  } catch (error) {
    const reason = timeout.signal.aborted
      ? `timed out after ${options.timeoutMs} ms`
      : options.signal.aborted
      ? "closed before delivery"
      : error instanceof Error
      ? error.message.split("\n")[0] ?? error.name
      : String(error);
    return { ok: false, status: null, body: "", error: reason, retryAfterMs: null };
  } finally {
    clearTimeout(timer);
  }
}

/** A short reason from an error body, for warnings. */
function reasonOf(text: string): string {
  const line = text.trim().split("\n")[0] ?? "";
  return line === "" ? "" : `: ${line.slice(0, 200)}`;
}
