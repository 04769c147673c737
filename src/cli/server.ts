import type { Command } from "commander";
import { join } from "node:path";
import { allowedHostsFor, journalPoller, listen, PortInUseError, stopServing } from "../api/mod.ts";
import {
  type CollectorStore,
  createCollectorApp,
  isPostgresUrl,
  KeyError,
  openKeyStore,
  openPostgresStore,
  openSqliteStore,
  parseRetention,
  type PostgresStore,
  type SqliteStore,
  storePoller,
} from "../collector/mod.ts";
import { JOURNAL_FILE, openJournal } from "../journal/mod.ts";
import { dataDir, ensureDataDir, loadOrCreateToken } from "../platform/mod.ts";
import { fieldLine, loadConfig, redactUrl } from "../config/mod.ts";
import { startCollectorExport } from "./_collector_export.ts";
import { UsageError } from "./errors.ts";
import { eprintln, paint, printJson, println, printTable } from "./output.ts";
import { shortTime } from "./sessions.ts";

/** The port `sentry server` listens on when none is given. */
export const DEFAULT_COLLECTOR_PORT = 8787;

/** The collector's folder inside Sentry's data directory, unless `--data` says otherwise. */
export const COLLECTOR_DIR = "collector";

const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1", "[::1]"]);
const WILDCARD = new Set(["0.0.0.0", "::", "[::]"]);

/** The options that name a collector's store. */
export interface DataOption {
  data?: string;
  /** `sqlite` or a `postgres://` URL; else the config file's `server.store`, else sqlite. */
  store?: string;
}

/** How often a PostgreSQL collector makes partitions ahead and applies its retention. */
const MAINTENANCE_MS = 60 * 60 * 1000;

/**
 * The collector store's URL (`--store`, else `server.store` in the config file), or null for
 * SQLite.
 *
 * @throws {UsageError} when it is neither `sqlite` nor a `postgres://` URL.
 */
export async function collectorStoreUrl(opts: DataOption): Promise<string | null> {
  const value = opts.store ?? (await loadConfig()).config.server.store;
  if (value === undefined || value.toLowerCase() === "sqlite") return null;
  const shown = redactUrl(value) ?? value.replace(/\/\/[^/@]*@/, "//***@");
  const hint = "for example: --store postgres://sentry@db.internal/sentry";
  if (!isPostgresUrl(value)) {
    throw new UsageError(`Invalid --store "${shown}": give "sqlite" or a postgres:// URL`, {
      hint,
    });
  }
  let host = "";
  try {
    host = new URL(value).hostname;
  } catch {
    // Said below.
  }
  if (host === "") {
    throw new UsageError(
      `Invalid --store "${shown}": give a host name or address (Unix sockets are not supported)`,
      { hint },
    );
  }
  return value;
}

/** The collector's data directory: `--data`, else `<data dir>/collector`; created 0700. */
function collectorDir(opts: DataOption): string {
  const dir = opts.data ?? join(dataDir(Deno.env.toObject()), COLLECTOR_DIR);
  return ensureDataDir(dir);
}

/**
 * Opens the collector's store the options name: PostgreSQL (`--store`, else `server.store` in
 * the config file), else the SQLite journal and `keys.json` of the data directory (`--data`,
 * else `<data dir>/collector`), created 0700.
 *
 * @throws {UsageError} on an invalid `--store`.
 * @throws {Error} when the store cannot be opened (the message names it, without a password).
 */
export async function openCollectorStore(opts: DataOption): Promise<CollectorStore> {
  const url = await collectorStoreUrl(opts);
  if (url !== null) return await openPostgresStore(url);
  const dir = collectorDir(opts);
  return openSqliteStore({
    journal: openJournal(join(dir, JOURNAL_FILE)),
    keys: openKeyStore(dir),
  });
}

/** The key operations of a store: the commands of `sentry server keys`. */
type KeyOps = Pick<CollectorStore, "addKey" | "listKeys" | "revokeKey" | "close">;

/** The key store the options name: the database's, or `keys.json` in the data directory. */
async function openKeys(opts: DataOption): Promise<KeyOps> {
  const url = await collectorStoreUrl(opts);
  if (url !== null) return await openPostgresStore(url);
  const keys = openKeyStore(collectorDir(opts));
  return {
    addKey: (name) => Promise.resolve().then(() => keys.add(name)),
    listKeys: () => Promise.resolve().then(() => keys.list()),
    revokeKey: (ref) => Promise.resolve().then(() => keys.revoke(ref)),
    close: () => Promise.resolve(),
  };
}

/** Runs a key action on the store, turning its validation errors into usage errors (exit 2). */
async function keyAction<T>(
  opts: DataOption,
  body: (store: KeyOps) => Promise<T>,
): Promise<T> {
  const store = await openKeys(opts);
  try {
    return await body(store);
  } catch (error) {
    if (error instanceof KeyError) {
      throw new UsageError(error.message, {
        hint: error.field === "name"
          ? 'a name is 1 to 64 letters, digits, ".", "_" or "-", unique among active keys'
          : "list keys with: sentry server keys list",
      });
    }
    throw error;
  } finally {
    await store.close();
  }
}

/** Adds `sentry server` (the collector) and its `keys` and `token` subcommands. */
export function registerServerCommands(program: Command): void {
  const server = program.command("server").description(
    "run the collector: receive other hosts' journals over the sync protocol and serve them",
  )
    .option("--port <n>", "the port to listen on", String(DEFAULT_COLLECTOR_PORT))
    .option("--listen <address>", "the address to listen on", "127.0.0.1")
    .option("--data <dir>", "the collector's data directory (default: <data dir>/collector)")
    .option(
      "--store <url>",
      "where events are kept: sqlite (default) or a postgres:// URL shared by several servers",
    )
    .option("--retain <age>", "with PostgreSQL: drop events older than this, such as 30d")
    .option(
      "--allow-host <host>",
      "a Host header the dashboard accepts, such as the name of a reverse proxy (repeatable)",
      (value: string, previous: string[] | undefined) => [...(previous ?? []), value],
    )
    .action(async (opts: ServeOptions) => {
      await serveCollector(opts);
    });

  const keys = server.command("keys").description(
    "manage the API keys hosts upload with (each host or fleet its own)",
  );
  keys.command("add").description("make a key and print it (shown only this once)")
    .argument("<name>", "a name for the key, such as the host's")
    .option("--data <dir>", "the collector's data directory")
    .option("--store <url>", "the collector's store: sqlite or a postgres:// URL")
    .action(async (name: string, _opts: DataOption, cmd: Command) => {
      const { key, info } = await keyAction(
        cmd.optsWithGlobals<DataOption>(),
        (store) => store.addKey(name),
      );
      println(key);
      eprintln(
        `sentry: added key ${info.id} "${info.name}"; it is shown only now: store it ` +
          `(on the host: sentry login --endpoint URL --api-key KEY)`,
      );
    });
  keys.command("list").description("list keys, active and revoked (never the secrets)")
    .option("--json", "print one JSON object per line")
    .option("--data <dir>", "the collector's data directory")
    .option("--store <url>", "the collector's store: sqlite or a postgres:// URL")
    .action(async (opts: DataOption & { json?: boolean }, cmd: Command) => {
      const list = await keyAction(cmd.optsWithGlobals<DataOption>(), (store) => store.listKeys());
      if (opts.json) {
        for (const k of list) printJson(k);
        return;
      }
      const rows = [["ID", "NAME", "CREATED", "STATE"]];
      for (const k of list) {
        rows.push([
          k.id,
          k.name,
          shortTime(k.created_at),
          k.revoked_at === null ? "active" : `revoked ${shortTime(k.revoked_at)}`,
        ]);
      }
      printTable(rows);
    });
  keys.command("revoke").description("revoke a key: its hosts get 401 from their next request")
    .argument("<key>", "the key's id (k_...) or name")
    .option("--data <dir>", "the collector's data directory")
    .option("--store <url>", "the collector's store: sqlite or a postgres:// URL")
    .action(async (ref: string, _opts: DataOption, cmd: Command) => {
      const { before, info } = await keyAction(cmd.optsWithGlobals<DataOption>(), async (store) => {
        const before = (await store.listKeys()).find((k) => k.id === ref || k.name === ref);
        return { before, info: await store.revokeKey(ref) };
      });
      const already = before?.id === info.id && before.revoked_at !== null;
      println(
        already
          ? `key ${info.id} "${info.name}" was already revoked (${info.revoked_at})`
          : `revoked key ${info.id} "${info.name}"`,
      );
    });

  server.command("token").description(
    "print the collector's dashboard and API token (not an upload key)",
  )
    .option("--data <dir>", "the collector's data directory")
    .action((_opts: DataOption, cmd: Command) => {
      println(loadOrCreateToken(collectorDir(cmd.optsWithGlobals<DataOption>())));
    });
}

/**
 * The `Host` values the dashboard accepts: those of the address and port, the `--allow-host`
 * values, and on a wildcard address this machine's name and interface addresses.
 */
function collectorHosts(listenOn: string, port: number, extra: readonly string[]): string[] {
  const hosts = allowedHostsFor(listenOn, port);
  const names = [...extra];
  if (WILDCARD.has(listenOn)) {
    names.push(Deno.hostname());
    try {
      for (const i of Deno.networkInterfaces()) {
        names.push(i.family === "IPv6" ? `[${i.address.split("%")[0]}]` : i.address);
      }
    } catch {
      // Without the interfaces, --allow-host still works.
    }
  }
  for (const name of names) {
    hosts.push(name);
    if (!/:\d+$/.test(name)) hosts.push(`${name}:${port}`);
  }
  return [...new Set(hosts)];
}

interface ServeOptions extends DataOption {
  port: string;
  listen: string;
  allowHost?: string[];
  retain?: string;
}

async function serveCollector(opts: ServeOptions): Promise<void> {
  const port = Number(opts.port);
  if (!/^\d+$/.test(opts.port) || port > 65535) {
    throw new UsageError(`Invalid --port "${opts.port}": give a port from 0 to 65535`);
  }
  if (!LOOPBACK.has(opts.listen)) {
    eprintln(paint(
      `sentry: warning: the collector listens on ${opts.listen}, not loopback: over plain HTTP, ` +
        "upload keys and events cross the network in clear; put a TLS reverse proxy in front",
      "yellow",
    ));
  }
  const loaded = await loadConfig();
  const config = loaded.config;
  const retainText = opts.retain ?? config.server.retain;
  // Where the retention came from, as an error names it: the flag, or the config file's field.
  const retainSource = (): string => {
    if (opts.retain !== undefined) return `--retain "${retainText}"`;
    let where = loaded.path;
    try {
      where = fieldLine(Deno.readTextFileSync(loaded.path), ["server", "retain"], loaded.path);
    } catch {
      // The file went away since it was loaded: its name is still right.
    }
    return `server.retain "${retainText}" in ${where}`;
  };
  let retainMs: number | null = null;
  if (retainText !== undefined) {
    try {
      retainMs = parseRetention(retainText);
    } catch {
      throw new UsageError(
        `Invalid ${retainSource()}: use a whole number of hours, days or weeks, such as "30d"`,
      );
    }
  }
  const url = await collectorStoreUrl(opts);
  if (retainMs !== null && url === null) {
    throw new UsageError(
      `Invalid ${retainSource()}: retention drops PostgreSQL partitions, and the store is SQLite`,
      { hint: "use it with --store postgres://... (or server.store), or leave it out with SQLite" },
    );
  }
  const dir = collectorDir(opts);
  const store = await openCollectorStore(opts);
  const pg = store.kind === "postgres" ? store as PostgresStore : null;
  if (!(await store.listKeys()).some((k) => k.revoked_at === null)) {
    eprintln(paint(
      "sentry: warning: no active upload key yet: make one with: sentry server keys add NAME",
      "yellow",
    ));
  }
  const token = loadOrCreateToken(dir);
  const poller = store.kind === "sqlite"
    ? journalPoller((store as SqliteStore).journal)
    : storePoller(store);
  const ac = new AbortController();
  let listener;
  try {
    listener = listen({ hostname: opts.listen, ports: [port], signal: ac.signal });
  } catch (error) {
    poller.close();
    await store.close();
    if (error instanceof PortInUseError) {
      throw new UsageError(error.message, { hint: "choose another with --port" });
    }
    throw error;
  }
  const actual = listener.port;
  const exporter = startCollectorExport(config.outputs.otlp, {
    report: (message) => eprintln(`sentry: collector: ${message}`),
  });
  const app = createCollectorApp({
    store,
    onError: (error) =>
      eprintln(
        `sentry: collector error: ${error instanceof Error ? error.message : String(error)}`,
      ),
    onNotice: (message) => eprintln(`sentry: collector: ${message}`),
    ...(exporter === null ? {} : { onIngested: exporter.onIngested }),
    api: {
      dataDir: dir,
      token,
      allowedHosts: collectorHosts(opts.listen, actual, opts.allowHost ?? []),
      live: poller,
      servedBy: {
        by: "sentry server",
        serve: port === DEFAULT_COLLECTOR_PORT ? "sentry server" : `sentry server --port ${actual}`,
      },
    },
  });
  // Ctrl-C stops cleanly from the moment the collector says it listens.
  // The open pages learn that this collector stopped, and what to run, before it goes.
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    void stopServing({ app, server: listener.server, abort: ac });
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  listener.serve(app.fetch);
  const host = opts.listen.includes(":") && !opts.listen.startsWith("[")
    ? `[${opts.listen}]`
    : opts.listen;
  const address = `http://${host}:${actual}`;
  eprintln(
    `sentry: collector listening at ${address} (data "${dir}", store "${store.location}"); ` +
      "Ctrl-C stops",
  );
  eprintln(`sentry: hosts upload with: sentry login --endpoint ${address} --api-key KEY`);
  // PostgreSQL: partitions made ahead, and the retention applied, now and every hour.
  let maintenance: ReturnType<typeof setInterval> | undefined;
  if (pg !== null) {
    const db = pg;
    const maintain = async (): Promise<void> => {
      try {
        await db.prepare();
        if (retainMs !== null) {
          const cut = new Date(Date.now() - retainMs);
          const gone = await db.retain(cut);
          if (gone.partitions > 0 || gone.sessions > 0) {
            eprintln(
              `sentry: collector: retention dropped ${gone.partitions} day partition(s) and ` +
                `${gone.sessions} session(s) before ${cut.toISOString()}`,
            );
          }
        }
      } catch (error) {
        eprintln(`sentry: collector: maintenance failed: ${(error as Error).message}`);
      }
    };
    await maintain();
    maintenance = setInterval(maintain, MAINTENANCE_MS);
  }
  const dataFlag = opts.data === undefined ? "" : ` --data ${opts.data}`;
  eprintln(`sentry: the dashboard's token: sentry server token${dataFlag}`);
  try {
    await listener.server.finished;
  } finally {
    Deno.removeSignalListener("SIGINT", stop);
    Deno.removeSignalListener("SIGTERM", stop);
    app.close();
    await exporter?.close();
    clearInterval(maintenance);
    poller.close();
    await store.close();
  }
}
