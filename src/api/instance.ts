/**
 * The API that `sentry run` and `sentry attach` serve while they watch, and the registry that
 * lets several of them share a host.
 *
 * Every Sentry process on a host shares one journal, so every API shows every session. Each
 * watching process serves its own API: on the port asked for, or with `"auto"` on the first
 * free port from {@link DEFAULT_API_PORT}. It writes `run/<session>.api` in the data directory
 * (mode 0600, removed at exit), so that any API (and `sentry serve`) can say which process
 * serves a live session. Controls of the process's own session go through its live session
 * (which keeps its state machine right); controls of other sessions act from outside, as
 * `sentry resume` and `sentry kill` do.
 *
 * @module
 */

import { join, resolve } from "node:path";
import type { AgentEvent } from "../events/mod.ts";
import type { Journal } from "../journal/mod.ts";
import { dataDir as defaultDataDir } from "../platform/mod.ts";
import type { ManualRollback, Session } from "../session/mod.ts";
import { createApp, type SentryApp } from "./app.ts";
import { allowedHostsFor } from "./auth.ts";
import { defaultControls, type SessionControls } from "./control.ts";
import { HttpError } from "./errors.ts";
import { createLiveHub, journalPoller, type LiveSource } from "./live.ts";

/** How long closing waits for requests in flight, in ms. */
const CLOSE_GRACE_MS = 1000;

/** The port `run`, `attach` and `serve` try first. */
export const DEFAULT_API_PORT = 7979;

/** How many ports from {@link DEFAULT_API_PORT} `"auto"` tries before an ephemeral one. */
export const AUTO_PORT_SPAN = 20;

/** What {@link startInstanceApi} serves. */
export interface InstanceApiOptions {
  journal: Journal;
  dataDir: string;
  /** The process's live session. */
  session: Session;
  /** The bearer token. */
  token: string;
  /** A port (0 for any free one), or `"auto"`: the first free from {@link DEFAULT_API_PORT}. */
  port: number | "auto";
  /** Time between SIGTERM and SIGKILL when killing another session; default 3000 ms. */
  killGraceMs?: number;
  /**
   * The environment, to tell whether `dataDir` is the one `sentry serve` finds by itself (the
   * command the dashboard shows once this API stopped); defaults to this process's.
   */
  env?: Record<string, string>;
}

/** A running instance API. */
export interface InstanceApi {
  /** Where it listens, such as `http://127.0.0.1:7979`. */
  url: string;
  port: number;
  /** Stops listening, removes the registry entry and stops the live sources. */
  close(): Promise<void>;
}

/** The registry entry of a live session's API. */
export interface ApiRegistration {
  session: string;
  url: string;
  pid: number;
}

/** Thrown when the port asked for is taken: a usage problem (choose another). */
export class PortInUseError extends Error {
  /** The port. */
  readonly port: number;

  /** Builds the error. */
  constructor(hostname: string, port: number) {
    super(`Cannot listen on ${hostname}:${port}: the port is in use`);
    this.name = "PortInUseError";
    this.port = port;
  }
}

/** A server that started listening, waiting for its handler. */
export interface Listener {
  server: Deno.HttpServer<Deno.NetAddr>;
  port: number;
  /** Sets the request handler (the app needs the port for its Host check). */
  serve(handler: (request: Request) => Response | Promise<Response>): void;
}

/** Options for {@link listen}. */
export interface ListenOptions {
  hostname: string;
  /** Ports to try in order; 0 means any free port. */
  ports: readonly number[];
  /** Stops the server at once when aborted; without it, stop it with `server.shutdown()`. */
  signal?: AbortSignal;
}

/**
 * Lets a server's requests in flight finish, for up to a second; one still running then is left
 * to the process's exit. Returns whether the server finished in time.
 */
async function finishRequests(server: Deno.HttpServer): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const finished = await Promise.race([
    server.shutdown().then(() => true),
    new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), CLOSE_GRACE_MS)),
  ]);
  clearTimeout(timer);
  return finished;
}

/**
 * Stops an API that serves on its own (`sentry serve`, `sentry server`): `app.close()` ends its
 * event streams first, so that their `closing` message reaches the open pages; requests in
 * flight get up to a second; a server still busy then is stopped through `abort`.
 */
export async function stopServing(
  o: { app: { close(): void }; server: Deno.HttpServer; abort: AbortController },
): Promise<void> {
  o.app.close();
  if (!(await finishRequests(o.server))) o.abort.abort();
}

/**
 * Listens on the first free port of `ports`.
 *
 * @throws {PortInUseError} when every port is taken (naming the last).
 */
export function listen(options: ListenOptions): Listener {
  let handler: ((request: Request) => Response | Promise<Response>) | undefined;
  const fetch = (request: Request) =>
    handler?.(request) ?? new Response("starting", { status: 503 });
  let last = 0;
  for (const port of options.ports) {
    last = port;
    try {
      const server = Deno.serve(
        {
          hostname: options.hostname,
          port,
          onListen: () => {},
          ...(options.signal === undefined ? {} : { signal: options.signal }),
        },
        fetch,
      );
      return { server, port: server.addr.port, serve: (h) => handler = h };
    } catch (error) {
      if (!(error instanceof Deno.errors.AddrInUse)) throw error;
    }
  }
  throw new PortInUseError(options.hostname, last);
}

/** The ports `"auto"` tries: the span from the default, then any free port. */
export function autoPorts(): number[] {
  return [...Array.from({ length: AUTO_PORT_SPAN }, (_, i) => DEFAULT_API_PORT + i), 0];
}

/**
 * Serves the API of a watching process on 127.0.0.1, with live events from its own session at
 * once and from other sessions through the journal, and registers it.
 *
 * @throws {PortInUseError} when an explicit port is taken.
 */
export function startInstanceApi(options: InstanceApiOptions): InstanceApi {
  const { journal, dataDir, session } = options;
  const listener = listen({
    hostname: "127.0.0.1",
    ports: options.port === "auto" ? autoPorts() : [options.port],
  });
  const own = session.config.id;
  const hub = createLiveHub();
  const unsubscribe = session.onEvent((event) => hub.publish(event));
  const poller = journalPoller(journal);
  const live = mergeLive(hub, poller, own);
  const fallback = defaultControls({
    journal,
    dataDir,
    ...(options.killGraceMs === undefined ? {} : { graceMs: options.killGraceMs }),
  });
  const app: SentryApp = createApp({
    journal,
    dataDir,
    token: options.token,
    allowedHosts: allowedHostsFor("127.0.0.1", listener.port),
    live,
    controls: liveControls(session, fallback),
    sensors: () => session.stats(),
    endsWith: {
      session: own,
      serve: serveCommand(dataDir, listener.port, options.env ?? Deno.env.toObject()),
    },
  });
  listener.serve(app.fetch);
  const url = `http://127.0.0.1:${listener.port}`;
  const entry = join(dataDir, "run", `${own}.api`);
  writeRegistration(entry, { session: own, url, pid: Deno.pid });
  return {
    url,
    port: listener.port,
    async close() {
      unsubscribe();
      app.close();
      poller.close();
      try {
        Deno.removeSync(entry);
      } catch {
        // Already gone.
      }
      // Let requests in flight finish (a kill through this API ends this process: its answer
      // must still go out); `app.close()` above ended the event streams.
      await finishRequests(listener.server);
    },
  };
}

/**
 * The command that serves the journal in `dataDir` on `port` once this process is gone:
 * `sentry serve --port N`, after `SENTRY_HOME=DIR` when `sentry serve` would not find `dataDir`
 * by itself (the environment without `SENTRY_HOME` leads elsewhere).
 */
export function serveCommand(dataDir: string, port: number, env: Record<string, string>): string {
  const { SENTRY_HOME: _, ...rest } = env;
  let usual: string | undefined;
  try {
    usual = resolve(defaultDataDir(rest));
  } catch {
    usual = undefined; // No HOME: only SENTRY_HOME can name it.
  }
  const dir = resolve(dataDir);
  const prefix = usual === dir ? "" : `SENTRY_HOME=${shellQuote(dir)} `;
  return `${prefix}sentry serve --port ${port}`;
}

/** A word for a POSIX shell: as is when plain, else in single quotes. */
function shellQuote(text: string): string {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replaceAll("'", `'\\''`)}'`;
}

/**
 * A live source of this process's own session (from `own`, at once) and of every other session
 * (from `others`, which polls the journal). Events of the own session that `others` also sees
 * are skipped, so each event arrives once.
 */
export function mergeLive(own: LiveSource, others: LiveSource, session: string): LiveSource {
  return {
    subscribe(listener: (event: AgentEvent) => void) {
      const a = own.subscribe(listener);
      const b = others.subscribe((event) => {
        if (event.session !== session) listener(event);
      });
      return () => {
        a();
        b();
      };
    },
  };
}

/** Controls that act through the live session for its own id, and from outside for others. */
function liveControls(session: Session, others: SessionControls): SessionControls {
  const own = session.config.id;
  const result = (
    action: "pause" | "resume" | "kill",
    r: { done: number[]; failed: { pid: number; reason: string }[]; forced?: number[] },
  ) => ({
    session: own,
    action,
    ok: r.failed.length === 0 && r.done.length > 0,
    done: r.done,
    failed: r.failed,
    ...(r.forced === undefined ? {} : { forced: r.forced }),
  });
  return {
    async pause(s) {
      if (s.id !== own) return await others.pause(s);
      return result("pause", await session.pause(null, "manual"));
    },
    async resume(s) {
      if (s.id !== own) return await others.resume(s);
      return result("resume", await session.resume("api"));
    },
    async kill(s) {
      if (s.id !== own) return await others.kill(s);
      return result("kill", await session.kill(null));
    },
    async reload(s, request) {
      if (s.id !== own) {
        if (others.reload === undefined) throw new HttpError(409, "Cannot reload from here");
        return await others.reload(s, request);
      }
      return await session.reload({ file: request.file, by: "api" });
    },
    async rollback(s, request) {
      // A dry run only reads the store; a real one must stop the agent through its session.
      if (s.id !== own || request.dryRun) return await others.rollback(s, request);
      if (session.config.protection === null) {
        throw new HttpError(409, `Session "${own}" has no snapshot: it runs with rollback off`);
      }
      const manual: ManualRollback = {
        by: "api",
        ...(request.paths === undefined ? {} : { filter: request.paths }),
      };
      const r = await session.rollback(null, manual);
      if (r === null) {
        throw new HttpError(409, `Session "${own}" is busy responding or was killed: try again`);
      }
      return {
        session: own,
        dry_run: false,
        ok: r.ok,
        snapshot: r.plan.snapshot.id,
        actions: r.plan.actions.map((a) => ({
          kind: a.kind,
          path: a.path,
          differences: a.differences,
        })),
        rollback: r.restore?.id ?? null,
        counts: r.restore?.counts ?? null,
      };
    },
  };
}

function writeRegistration(path: string, entry: ApiRegistration): void {
  const tmp = `${path}.tmp`;
  try {
    Deno.writeTextFileSync(tmp, `${JSON.stringify(entry)}\n`, { mode: 0o600 });
    Deno.renameSync(tmp, path);
  } catch {
    // The registry is informational: the API works without it.
  }
}

/**
 * The live sessions' APIs registered in `dataDir` whose process is alive (`isAlive`), by
 * session id. Entries of dead processes are ignored.
 */
export function readApiRegistry(
  dataDir: string,
  isAlive: (pid: number) => boolean,
): Map<string, ApiRegistration> {
  const out = new Map<string, ApiRegistration>();
  let entries: Iterable<Deno.DirEntry>;
  try {
    entries = Deno.readDirSync(join(dataDir, "run"));
  } catch {
    return out;
  }
  for (const entry of entries) {
    if (!entry.isFile || !entry.name.endsWith(".api")) continue;
    try {
      const parsed = JSON.parse(Deno.readTextFileSync(join(dataDir, "run", entry.name)));
      if (
        typeof parsed?.session === "string" && typeof parsed.url === "string" &&
        Number.isInteger(parsed.pid) && isAlive(parsed.pid)
      ) {
        out.set(parsed.session, { session: parsed.session, url: parsed.url, pid: parsed.pid });
      }
    } catch {
      // Half-written or foreign: skip it.
    }
  }
  return out;
}
