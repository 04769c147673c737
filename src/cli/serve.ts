import type { Command } from "commander";
import { join } from "node:path";
import {
  allowedHostsFor,
  createApp,
  DEFAULT_API_PORT,
  journalPoller,
  listen,
  PortInUseError,
  stopServing,
} from "../api/mod.ts";
import { JOURNAL_FILE, openJournal } from "../journal/mod.ts";
import { dataDir, ensureDataDir, loadOrCreateToken } from "../platform/mod.ts";
import { reconcileJournal } from "./journal_access.ts";
import { UsageError } from "./errors.ts";
import { eprintln, paint, println } from "./output.ts";

/** The port `sentry serve` listens on when none is given. */
export const DEFAULT_SERVE_PORT = DEFAULT_API_PORT;

const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1"]);

/**
 * Whether a `--listen` value is an address to listen on: an IPv4 or IPv6 literal, or
 * `localhost`. A host name is refused: it would need a lookup, and may name another host.
 */
export function isListenAddress(text: string): boolean {
  if (text === "localhost") return true;
  const v4 = text.match(/^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/);
  if (v4 !== null) return v4.slice(1).every((o) => Number(o) <= 255 && !/^0\d/.test(o));
  if (!text.includes(":") || !/^[0-9a-f:.]+$/i.test(text)) return false;
  try {
    // The URL parser knows IPv6 literals, with their :: and embedded IPv4 forms.
    new URL(`http://[${text}]/`);
    return true;
  } catch {
    return false;
  }
}

/** Adds `sentry serve` and `sentry token`. */
export function registerServeCommands(program: Command): void {
  program.command("serve").description(
    "serve the journal's API on localhost, to browse and control sessions",
  )
    .option("--port <n>", "the port to listen on", String(DEFAULT_SERVE_PORT))
    .option(
      "--listen <address>",
      "the address to listen on (default 127.0.0.1; others need care)",
      "127.0.0.1",
    )
    .action(async (opts: { port: string; listen: string }) => {
      const port = Number(opts.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) {
        throw new UsageError(`Invalid --port "${opts.port}": give a port from 0 to 65535`);
      }
      if (!isListenAddress(opts.listen)) {
        throw new UsageError(
          `Invalid --listen "${opts.listen}": give an IP address (127.0.0.1, ::1, 0.0.0.0) or localhost`,
        );
      }
      if (!LOOPBACK.has(opts.listen)) {
        eprintln(paint(
          `sentry: warning: listening on ${opts.listen}, not loopback: anyone who can reach it and has the token ` +
            "can pause, kill and roll back agents",
          "yellow",
        ));
      }
      const dir = ensureDataDir(dataDir(Deno.env.toObject()));
      const journal = openJournal(join(dir, JOURNAL_FILE));
      reconcileJournal(journal, dir);
      const token = loadOrCreateToken(dir);
      const poller = journalPoller(journal);
      const ac = new AbortController();
      let listener;
      try {
        listener = listen({ hostname: opts.listen, ports: [port], signal: ac.signal });
      } catch (error) {
        journal.close();
        if (error instanceof PortInUseError) {
          throw new UsageError(error.message, { hint: "choose another with --port" });
        }
        throw error;
      }
      const actual = listener.port;
      const app = createApp({
        journal,
        dataDir: dir,
        token,
        allowedHosts: allowedHostsFor(opts.listen, actual),
        live: poller,
        servedBy: {
          by: "sentry serve",
          serve: port === DEFAULT_SERVE_PORT ? "sentry serve" : `sentry serve --port ${actual}`,
        },
      });
      listener.serve(app.fetch);
      const server = listener.server;
      const host = opts.listen.includes(":") ? `[${opts.listen}]` : opts.listen;
      eprintln(
        `sentry: serving the API at http://${host}:${actual} (token: sentry token); Ctrl-C stops`,
      );
      // The open pages learn that this server stopped, and what to run, before it goes.
      let stopping = false;
      const stop = () => {
        if (stopping) return;
        stopping = true;
        void stopServing({ app, server, abort: ac });
      };
      Deno.addSignalListener("SIGINT", stop);
      Deno.addSignalListener("SIGTERM", stop);
      try {
        await server.finished;
      } finally {
        Deno.removeSignalListener("SIGINT", stop);
        Deno.removeSignalListener("SIGTERM", stop);
        app.close();
        poller.close();
        journal.close();
      }
    });

  program.command("token").description(
    "print the API's bearer token (created, mode 0600, at first use)",
  )
    .action(() => {
      const dir = ensureDataDir(dataDir(Deno.env.toObject()));
      println(loadOrCreateToken(dir));
    });
}
