/**
 * The SSE clients of the stream benchmark, in their own process so that their parsing does not
 * share the server's event loop: `clients` concurrent `fetch` streams of `/v1/events/stream`,
 * each parsing the SSE messages and noting every event's id and arrival time. A stream that
 * ends early is reopened with `Last-Event-ID`, as a browser's EventSource does.
 *
 * Usage: deno run -A bench/_sse_clients.ts '<ClientsConfig as JSON>'
 * It prints `ready` once every client has its response, then, when every client has `expected`
 * distinct events or a line `stop` arrives on stdin, one line of JSON: {@link ClientsOutput}.
 *
 * @module
 */

/** What the clients are told, as JSON in the first argument. */
export interface ClientsConfig {
  url: string;
  token: string;
  clients: number;
  /** Distinct events after which a client stops. */
  expected: number;
}

/** What one client received. */
export interface ClientResult {
  /** Event ids, in arrival order, repeats included. */
  ids: string[];
  /** Arrival times (`performance.timeOrigin + performance.now()`, ms), one per id. */
  times: number[];
  /** Streams reopened with Last-Event-ID after the server ended one. */
  reconnects: number;
  /** Chunks read from the body. */
  reads: number;
  errors: string[];
}

/** What the clients' process prints at the end. */
export interface ClientsOutput {
  clients: ClientResult[];
  /** The process's CPU time (user + system), in ms, from /proc/self/stat. */
  cpuMs: number;
}

function cpuMs(): number {
  const stat = Deno.readTextFileSync("/proc/self/stat");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

const NEWLINE = 10;
const ID_FIELD = new TextEncoder().encode("id: ");
const EVENT_LINE = new TextEncoder().encode("event: event");
const decoder = new TextDecoder();

function startsWith(bytes: Uint8Array, at: number, prefix: Uint8Array): boolean {
  if (at + prefix.length > bytes.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[at + i] !== prefix[i]) return false;
  return true;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function now(): number {
  return performance.timeOrigin + performance.now();
}

/** One client: reads the stream until it has `expected` distinct events or `signal` aborts. */
async function client(
  config: ClientsConfig,
  signal: AbortSignal,
  onResponse: () => void,
): Promise<ClientResult> {
  const result: ClientResult = {
    ids: [],
    times: [],
    reconnects: 0,
    reads: 0,
    errors: [],
  };
  const distinct = new Set<string>();
  let lastId: string | undefined;
  let opened = false;
  while (!signal.aborted && distinct.size < config.expected && result.errors.length < 5) {
    try {
      const headers: Record<string, string> = { authorization: `Bearer ${config.token}` };
      if (lastId !== undefined) headers["last-event-id"] = lastId;
      const res = await fetch(config.url, { headers, signal });
      if (res.status !== 200 || res.body === null) {
        result.errors.push(`status ${res.status}`);
        await res.body?.cancel();
        continue;
      }
      if (opened) result.reconnects++;
      else onResponse();
      opened = true;
      const reader = res.body.getReader();
      // Aborting the fetch does not end a body already being read: cancel the reader too.
      const cancel = () => reader.cancel().catch(() => {});
      signal.addEventListener("abort", cancel, { once: true });
      // Parsed as bytes, line by line with the native indexOf: decoding and splitting text cost
      // the clients more CPU than the server spent sending.
      let buffer: Uint8Array = new Uint8Array(0);
      while (distinct.size < config.expected) {
        const { value, done } = await reader.read();
        if (done) break;
        const at = now();
        result.reads++;
        buffer = concat(buffer, value);
        let start = 0;
        let messageStart = 0;
        let id: string | undefined;
        let isEvent = false;
        for (;;) {
          const newline = buffer.indexOf(NEWLINE, start);
          if (newline < 0) break;
          if (newline === start) {
            // A blank line ends a message.
            if (isEvent && id !== undefined) {
              result.ids.push(id);
              result.times.push(at);
              distinct.add(id);
              lastId = id;
            }
            id = undefined;
            isEvent = false;
            messageStart = newline + 1;
          } else if (startsWith(buffer, start, ID_FIELD)) {
            id = decoder.decode(buffer.subarray(start + ID_FIELD.length, newline));
          } else if (
            startsWith(buffer, start, EVENT_LINE) && newline - start === EVENT_LINE.length
          ) {
            isEvent = true;
          }
          start = newline + 1;
        }
        buffer = buffer.slice(messageStart);
      }
      signal.removeEventListener("abort", cancel);
      await reader.cancel().catch(() => {});
    } catch (error) {
      if (!signal.aborted) {
        result.errors.push(error instanceof Error ? error.message : String(error));
      }
    }
  }
  return result;
}

async function main(): Promise<void> {
  const config = JSON.parse(Deno.args[0] ?? "{}") as ClientsConfig;
  const ac = new AbortController();
  const encoder = new TextEncoder();
  let responses = 0;
  const runs = Array.from(
    { length: config.clients },
    () =>
      client(config, ac.signal, () => {
        if (++responses === config.clients) Deno.stdout.writeSync(encoder.encode("ready\n"));
      }),
  );
  // A "stop" on stdin (or its end) ends every client.
  (async () => {
    const decoder = new TextDecoder();
    let text = "";
    for await (const chunk of Deno.stdin.readable) {
      text += decoder.decode(chunk);
      if (text.includes("stop")) break;
    }
    ac.abort();
  })();
  const results = await Promise.all(runs);
  const output: ClientsOutput = { clients: results, cpuMs: cpuMs() };
  const bytes = encoder.encode(JSON.stringify(output) + "\n");
  let offset = 0;
  while (offset < bytes.length) offset += Deno.stdout.writeSync(bytes.subarray(offset));
  Deno.exit(0);
}

if (import.meta.main) await main();
