// @ts-check
/**
 * Server-Sent Events over `fetch()`. `EventSource` cannot send an `Authorization` header, and the
 * token must never go into a URL, so the dashboard reads `/v1/events/stream` as a plain
 * streaming response and parses the event stream itself, reconnecting with `Last-Event-ID`.
 *
 * @module
 */

/**
 * One dispatched message.
 * @typedef {{ event: string, data: string, id: string }} SseMessage
 */

/**
 * An incremental parser of `text/event-stream`, per the HTML standard: `data` lines are joined
 * with newlines, `event` names the type ("message" by default), `id` sets the last event id,
 * `retry` the reconnection delay, lines starting with ":" are comments, and a blank line
 * dispatches. Lines may end in CRLF, LF or CR, and chunks may split them anywhere.
 */
export class SseParser {
  #line = "";
  #skipLf = false;
  /** @type {string[]} */
  #data = [];
  #event = "";
  /** The id that will be given to the next dispatched message. */
  lastEventId = "";
  /** The reconnection delay the server asked for with `retry`, if any. */
  /** @type {number | undefined} */
  retryMs = undefined;

  /**
   * Feeds decoded text and returns the messages it completed.
   * @param {string} chunk
   * @returns {SseMessage[]}
   */
  push(chunk) {
    /** @type {SseMessage[]} */
    const out = [];
    let start = 0;
    for (let i = 0; i < chunk.length; i++) {
      const ch = chunk[i];
      if (ch !== "\n" && ch !== "\r") continue;
      if (ch === "\n" && this.#skipLf && i === start && this.#line === "") {
        // The LF of a CRLF split across chunks.
        this.#skipLf = false;
        start = i + 1;
        continue;
      }
      this.#skipLf = false;
      const line = this.#line + chunk.slice(start, i);
      this.#line = "";
      if (ch === "\r") {
        if (chunk[i + 1] === "\n") i++;
        else if (i + 1 === chunk.length) this.#skipLf = true;
      }
      start = i + 1;
      const message = this.#take(line);
      if (message !== undefined) out.push(message);
    }
    if (start < chunk.length) {
      this.#line += chunk.slice(start);
      this.#skipLf = false;
    }
    return out;
  }

  /**
   * @param {string} line
   * @returns {SseMessage | undefined}
   */
  #take(line) {
    if (line === "") {
      if (this.#data.length === 0) {
        this.#event = "";
        return undefined;
      }
      const message = {
        event: this.#event || "message",
        data: this.#data.join("\n"),
        id: this.lastEventId,
      };
      this.#data = [];
      this.#event = "";
      return message;
    }
    if (line.startsWith(":")) return undefined;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.#data.push(value);
    else if (field === "event") this.#event = value;
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retryMs = Number(value);
    return undefined;
  }
}

/**
 * The state of a stream: connecting, open, waiting to retry, refused (401: the token is wrong),
 * or closed by the caller.
 * @typedef {"connecting" | "open" | "retrying" | "unauthorized" | "closed"} StreamState
 */

/**
 * @typedef {object} StreamOptions
 * @property {string} url The stream's URL (same origin).
 * @property {string} token The bearer token, sent as a header.
 * @property {(message: SseMessage) => void} onMessage Called for each message.
 * @property {(state: StreamState, detail?: string) => void} [onState] Called when the state changes.
 * @property {string} [lastEventId] Resume after this id.
 * @property {number} [retryMs] The first reconnection delay; doubles up to `maxRetryMs`.
 * @property {number} [maxRetryMs]
 * @property {number} [idleMs] Reconnect when nothing arrived for this long (the server sends a
 *   keep-alive every 15 s).
 * @property {typeof fetch} [fetch]
 */

/**
 * Opens the stream and keeps it open: after an error or an end it reconnects with the last id it
 * saw, so the server replays what was missed. Stops on `close()`, and on a 401.
 * @param {StreamOptions} options
 * @returns {{ close(): void, readonly lastEventId: string }}
 */
export function openStream(options) {
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  const firstRetry = options.retryMs ?? 1000;
  const maxRetry = options.maxRetryMs ?? 15_000;
  const idleMs = options.idleMs ?? 45_000;
  const stop = new AbortController();
  let lastEventId = options.lastEventId ?? "";
  let retry = firstRetry;
  /** @param {StreamState} state @param {string} [detail] */
  const report = (state, detail) => options.onState?.(state, detail);

  (async () => {
    while (!stop.signal.aborted) {
      report("connecting");
      const attempt = new AbortController();
      const abortAttempt = () => attempt.abort();
      stop.signal.addEventListener("abort", abortAttempt);
      /** @type {ReturnType<typeof setTimeout> | undefined} */
      let idle;
      const touch = () => {
        clearTimeout(idle);
        idle = setTimeout(abortAttempt, idleMs);
      };
      let detail = "";
      try {
        /** @type {Record<string, string>} */
        const headers = { authorization: `Bearer ${options.token}`, accept: "text/event-stream" };
        if (lastEventId !== "") headers["last-event-id"] = lastEventId;
        touch();
        const res = await doFetch(options.url, {
          headers,
          signal: attempt.signal,
          cache: "no-store",
        });
        if (res.status === 401) {
          await res.body?.cancel();
          report("unauthorized");
          return;
        }
        if (!res.ok || res.body === null) {
          await res.body?.cancel();
          throw new Error(`HTTP ${res.status}`);
        }
        report("open");
        retry = firstRetry;
        const parser = new SseParser();
        parser.lastEventId = lastEventId;
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          touch();
          for (const message of parser.push(value)) {
            if (message.id !== "") lastEventId = message.id;
            options.onMessage(message);
          }
          if (parser.retryMs !== undefined) retry = parser.retryMs;
        }
        detail = "the stream ended";
      } catch (error) {
        detail = error instanceof Error ? error.message : String(error);
      } finally {
        clearTimeout(idle);
        stop.signal.removeEventListener("abort", abortAttempt);
      }
      if (stop.signal.aborted) break;
      report("retrying", detail);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, retry);
        stop.signal.addEventListener("abort", () => {
          clearTimeout(timer);
          resolve(undefined);
        }, { once: true });
      });
      retry = Math.min(retry * 2, maxRetry);
    }
    report("closed");
  })();

  return {
    close: () => stop.abort(),
    get lastEventId() {
      return lastEventId;
    },
  };
}
