/**
 * A throwaway PostgreSQL cluster for the collector's tests and benchmark: `initdb` in a
 * temporary directory, `pg_ctl start` on a free loopback port (and a socket in that directory),
 * and `close()` that stops it and removes the directory. Run as root, the server runs as
 * `nobody` (initdb refuses root). Where Debian's binaries are absent, {@link postgresSkip} says
 * why, for `ignore`.
 *
 * @module
 */

import { join } from "node:path";

/** A running throwaway cluster. */
export interface TestPostgres {
  /** A `postgres://` URL of its `sentry` database, as `sentry server --store` takes it. */
  url: string;
  /** The cluster's directory (data, socket, log). */
  dir: string;
  /** Creates another empty database (of `locale`, default the cluster's: C) and returns its URL. */
  createDatabase(name: string, options?: { locale?: string }): Promise<string>;
  /** Stops the server (immediate mode) and keeps the directory: a database that went down. */
  stop(): Promise<void>;
  /** Stops the server (immediate mode), if running, and removes the directory. */
  close(): Promise<void>;
}

/** The directory of Debian's PostgreSQL binaries, the newest version; null when absent. */
export function postgresBin(): string | null {
  const env = Deno.env.get("SENTRY_PG_BIN");
  if (env !== undefined && env !== "") {
    try {
      Deno.statSync(join(env, "initdb"));
      return env;
    } catch {
      return null;
    }
  }
  let versions: number[] = [];
  try {
    versions = [...Deno.readDirSync("/usr/lib/postgresql")]
      .map((e) => Number(e.name)).filter((n) => Number.isInteger(n)).sort((a, b) => b - a);
  } catch {
    return null;
  }
  for (const v of versions) {
    const bin = `/usr/lib/postgresql/${v}/bin`;
    try {
      Deno.statSync(join(bin, "initdb"));
      Deno.statSync(join(bin, "pg_ctl"));
      return bin;
    } catch {
      // Not a complete server install: try the next.
    }
  }
  return null;
}

/**
 * Why the PostgreSQL tests cannot run here, or null when they can: for `Deno.test`'s `ignore`,
 * printed once so the skip is visible.
 */
export function postgresSkip(): string | null {
  const reason = postgresBin() === null
    ? "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin or $SENTRY_PG_BIN " +
      "(apt-get install postgresql)"
    : null;
  if (reason !== null && !warned) {
    warned = true;
    // deno-lint-ignore no-console
    console.warn(`skipping the PostgreSQL tests: ${reason}`);
  }
  return reason;
}
let warned = false;

const NOBODY = 65534;

/** Options for {@link startPostgres}. */
export interface StartPostgresOptions {
  /**
   * Server settings appended to `postgresql.conf`, such as `{ max_locks_per_transaction: "10" }`
   * to make a limit small enough for a test to reach.
   */
  settings?: Record<string, string>;
}

/** Starts a throwaway cluster with a `sentry` database. */
export async function startPostgres(options: StartPostgresOptions = {}): Promise<TestPostgres> {
  const bin = postgresBin();
  if (bin === null) {
    throw new Error("Cannot start PostgreSQL: no binaries under /usr/lib/postgresql");
  }
  const root = Deno.uid() === 0;
  const dir = await Deno.makeTempDir({ prefix: "sentry-pg-" });
  const data = join(dir, "data");
  const port = freePort();
  let started = false;
  try {
    if (root) await Deno.chown(dir, NOBODY, NOBODY);
    await run(bin, root, [
      "initdb",
      "-D",
      data,
      "-U",
      "postgres",
      "--auth=trust",
      "-E",
      "UTF8",
      "--locale=C",
      "--no-sync",
    ]);
    const conf = [
      "listen_addresses = '127.0.0.1'",
      `port = ${port}`,
      `unix_socket_directories = '${dir}'`,
      "fsync = off",
      "synchronous_commit = off",
      "full_page_writes = off",
      "max_connections = 100",
      "shared_buffers = 128MB",
      "max_wal_size = 1GB",
      "log_min_messages = warning",
      ...Object.entries(options.settings ?? {}).map(([k, v]) => `${k} = '${v}'`),
    ].join("\n");
    await Deno.writeTextFile(join(data, "postgresql.conf"), `\n${conf}\n`, { append: true });
    await run(bin, root, ["pg_ctl", "-D", data, "-l", join(dir, "log"), "-w", "-t", "30", "start"]);
    started = true;
    let running = true;
    const url = (db: string) => `postgres://postgres@127.0.0.1:${port}/${db}`;
    await run(bin, root, [
      "createdb",
      "-h",
      "127.0.0.1",
      "-p",
      String(port),
      "-U",
      "postgres",
      "sentry",
    ]);
    return {
      url: url("sentry"),
      dir,
      async createDatabase(name, options = {}) {
        await run(bin, root, [
          "createdb",
          "-h",
          "127.0.0.1",
          "-p",
          String(port),
          "-U",
          "postgres",
          ...(options.locale === undefined
            ? []
            : ["--locale", options.locale, "--template", "template0"]),
          name,
        ]);
        return url(name);
      },
      async stop() {
        if (!running) return;
        await run(bin, root, ["pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"]);
        running = false;
      },
      async close() {
        try {
          if (running) {
            await run(bin, root, ["pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"]);
          }
        } finally {
          await Deno.remove(dir, { recursive: true });
        }
      },
    };
  } catch (error) {
    if (started) {
      await run(bin, root, ["pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"]).catch(
        () => {},
      );
    }
    let log = "";
    try {
      log = (await Deno.readTextFile(join(dir, "log"))).slice(-2000);
    } catch {
      // No log yet.
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw new Error(
      `Cannot start PostgreSQL: ${(error as Error).message}${log ? `\n${log}` : ""}`,
      {
        cause: error,
      },
    );
  }
}

/** Runs one of the cluster's binaries, as `nobody` when this process is root. */
async function run(bin: string, root: boolean, argv: string[]): Promise<void> {
  const [name, ...args] = argv;
  const program = join(bin, name ?? "");
  const command = root
    ? new Deno.Command("setpriv", {
      args: [
        "--reuid",
        String(NOBODY),
        "--regid",
        String(NOBODY),
        "--clear-groups",
        program,
        ...args,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      cwd: "/",
    })
    : new Deno.Command(program, { args, stdin: "null", stdout: "piped", stderr: "piped" });
  const out = await command.output();
  if (!out.success) {
    const text = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-5).join("; ");
    throw new Error(`${name} failed (exit ${out.code}): ${text}`);
  }
}

/** A free loopback TCP port, found by binding port 0. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}
