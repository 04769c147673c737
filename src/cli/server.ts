import type { Command } from "commander";
import { join } from "node:path";
import { allowedHostsFor, journalPoller, listen, PortInUseError } from "../api/mod.ts";
import { createCollectorApp, KeyError, type KeyStore, openKeyStore } from "../collector/mod.ts";
import { JOURNAL_FILE, openJournal } from "../journal/mod.ts";
import { dataDir, ensureDataDir, loadOrCreateToken } from "../platform/mod.ts";
import { UsageError } from "./errors.ts";
import { eprintln, paint, printJson, println, printTable } from "./output.ts";
import { shortTime } from "./sessions.ts";

/** The port `sentry server` listens on when none is given. */
export const DEFAULT_COLLECTOR_PORT = 8787;

/** The collector's folder inside Sentry's data directory, unless `--data` says otherwise. */
export const COLLECTOR_DIR = "collector";

const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1", "[::1]"]);
const WILDCARD = new Set(["0.0.0.0", "::", "[::]"]);

interface DataOption {
  data?: string;
}

/** The collector's data directory: `--data`, else `<data dir>/collector`; created 0700. */
function collectorDir(opts: DataOption): string {
  const dir = opts.data ?? join(dataDir(Deno.env.toObject()), COLLECTOR_DIR);
  return ensureDataDir(dir);
}

function openKeys(opts: DataOption): KeyStore {
  return openKeyStore(collectorDir(opts));
}

/** Runs a key store action, turning its validation errors into usage errors (exit 2). */
function keyAction<T>(body: () => T): T {
  try {
    return body();
  } catch (error) {
    if (error instanceof KeyError) {
      throw new UsageError(error.message, {
        hint: error.field === "name"
          ? 'a name is 1 to 64 letters, digits, ".", "_" or "-", unique among active keys'
          : "list keys with: sentry server keys list",
      });
    }
    throw error;
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
      "--allow-host <host>",
      "a Host header the dashboard accepts, such as the name of a reverse proxy (repeatable)",
      (value: string, previous: string[] | undefined) => [...(previous ?? []), value],
    )
    .action(async (opts: DataOption & { port: string; listen: string; allowHost?: string[] }) => {
      await serveCollector(opts);
    });

  const keys = server.command("keys").description(
    "manage the API keys hosts upload with (each host or fleet its own)",
  );
  keys.command("add").description("make a key and print it (shown only this once)")
    .argument("<name>", "a name for the key, such as the host's")
    .option("--data <dir>", "the collector's data directory")
    .action((name: string, _opts: DataOption, cmd: Command) => {
      const store = openKeys(cmd.optsWithGlobals<DataOption>());
      const { key, info } = keyAction(() => store.add(name));
      println(key);
      eprintln(
        `sentry: added key ${info.id} "${info.name}"; it is shown only now: store it ` +
          `(on the host: sentry login --endpoint URL --api-key KEY)`,
      );
    });
  keys.command("list").description("list keys, active and revoked (never the secrets)")
    .option("--json", "print one JSON object per line")
    .option("--data <dir>", "the collector's data directory")
    .action((opts: DataOption & { json?: boolean }, cmd: Command) => {
      const list = openKeys(cmd.optsWithGlobals<DataOption>()).list();
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
    .action((ref: string, _opts: DataOption, cmd: Command) => {
      const store = openKeys(cmd.optsWithGlobals<DataOption>());
      const before = store.list().find((k) => k.id === ref || k.name === ref);
      const info = keyAction(() => store.revoke(ref));
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

async function serveCollector(
  opts: DataOption & { port: string; listen: string; allowHost?: string[] },
): Promise<void> {
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
  const dir = collectorDir(opts);
  const keys = openKeyStore(dir);
  if (!keys.list().some((k) => k.revoked_at === null)) {
    eprintln(paint(
      "sentry: warning: no active upload key yet: make one with: sentry server keys add NAME",
      "yellow",
    ));
  }
  const journal = openJournal(join(dir, JOURNAL_FILE));
  const token = loadOrCreateToken(dir);
  const poller = journalPoller(journal);
  const ac = new AbortController();
  let listener;
  try {
    listener = listen({ hostname: opts.listen, ports: [port], signal: ac.signal });
  } catch (error) {
    poller.close();
    journal.close();
    if (error instanceof PortInUseError) {
      throw new UsageError(error.message, { hint: "choose another with --port" });
    }
    throw error;
  }
  const actual = listener.port;
  const app = createCollectorApp({
    journal,
    keys,
    onError: (error) =>
      eprintln(
        `sentry: collector error: ${error instanceof Error ? error.message : String(error)}`,
      ),
    onNotice: (message) => eprintln(`sentry: collector: ${message}`),
    api: {
      dataDir: dir,
      token,
      allowedHosts: collectorHosts(opts.listen, actual, opts.allowHost ?? []),
      live: poller,
    },
  });
  // Ctrl-C stops cleanly from the moment the collector says it listens.
  const stop = () => ac.abort();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  listener.serve(app.fetch);
  const host = opts.listen.includes(":") && !opts.listen.startsWith("[")
    ? `[${opts.listen}]`
    : opts.listen;
  const url = `http://${host}:${actual}`;
  eprintln(`sentry: collector listening at ${url} (data "${dir}"); Ctrl-C stops`);
  eprintln(`sentry: hosts upload with: sentry login --endpoint ${url} --api-key KEY`);
  const dataFlag = opts.data === undefined ? "" : ` --data ${opts.data}`;
  eprintln(`sentry: the dashboard's token: sentry server token${dataFlag}`);
  try {
    await listener.server.finished;
  } finally {
    Deno.removeSignalListener("SIGINT", stop);
    Deno.removeSignalListener("SIGTERM", stop);
    app.close();
    poller.close();
    journal.close();
  }
}
