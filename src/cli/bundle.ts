/**
 * `sentry export` and `sentry import`: offline bundles for air-gapped hosts. `export` writes the
 * journal's events (by time and session) to a tamper-evident bundle; `import`, on the
 * collector's machine, verifies a bundle end to end and only then stores it in the collector's
 * journal. The format is in docs/sync-protocol.md, "Offline bundles".
 *
 * @module
 */

import type { Command } from "commander";
import { basename, dirname, join } from "node:path";
import {
  type CollectorStore,
  type HostBinding,
  type KeyInfo,
  openKeyStore,
} from "../collector/mod.ts";
import { IngestError } from "../journal/mod.ts";
import { dataDir } from "../platform/mod.ts";
import { formatBytes } from "../rollback/mod.ts";
import {
  BundleError,
  type BundleSummary,
  exportBundle,
  loadOrCreateHostId,
  MIN_SIGN_KEY_BYTES,
  type SignatureStatus,
  storeBundle,
  verifyBundle,
} from "../sync/mod.ts";
import { ExitCode, UsageError } from "./errors.ts";
import { findSession, openForReading } from "./journal_access.ts";
import { eprintln, printJson, println } from "./output.ts";
import { COLLECTOR_DIR, collectorStoreUrl, openCollectorStore } from "./server.ts";

const UNITS: Readonly<Record<string, number>> = {
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

/**
 * Parses a `--since` or `--until` value: a duration before `now` (`90s`, `30m`, `24h`, `7d`,
 * `2w`) or an ISO 8601 date or time (`2026-11-24`, `2026-11-24T18:00:00Z`; local time when the
 * zone is left out). Returns an ISO time in UTC with milliseconds, as the journal stores them.
 *
 * @throws {UsageError} naming the flag when the value is neither.
 */
export function parseTimeFlag(flag: string, text: string, now: number): string {
  const value = text.trim();
  const relative = /^(\d+)(s|m|h|d|w)$/.exec(value);
  if (relative !== null) {
    return new Date(now - Number(relative[1]) * (UNITS[relative[2] ?? "d"] ?? 0)).toISOString();
  }
  const date = /^(\d{4})-(\d\d)-(\d\d)(?:[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:?\d\d)?)?$/i
    .exec(value);
  const ms = date === null ? NaN : Date.parse(value.replace(" ", "T"));
  // Date.parse takes 2026-02-30 for March 2: the calendar date must exist as written.
  const day = date === null
    ? null
    : new Date(Date.UTC(Number(date[1]), Number(date[2]) - 1, Number(date[3])));
  if (
    Number.isNaN(ms) || day === null || day.getUTCMonth() + 1 !== Number(date?.[2]) ||
    day.getUTCDate() !== Number(date?.[3])
  ) {
    throw new UsageError(
      `Invalid ${flag} "${text}": give a duration such as 24h or 7d, or an ISO time such as ` +
        "2026-11-24 or 2026-11-24T18:00:00Z",
    );
  }
  return new Date(ms).toISOString();
}

/**
 * Reads a shared signing key: the file's bytes, without trailing whitespace. It must hold at
 * least {@link MIN_SIGN_KEY_BYTES} bytes.
 *
 * @throws {UsageError} when the file cannot be read or the key is too short.
 */
export function readSignKey(path: string): Uint8Array {
  let bytes: Uint8Array;
  try {
    bytes = Deno.readFileSync(path);
  } catch (error) {
    throw new UsageError(`Cannot read --sign-key-file "${path}": ${(error as Error).message}`);
  }
  let end = bytes.length;
  while (end > 0 && [0x0a, 0x0d, 0x20, 0x09].includes(bytes[end - 1] ?? 0)) end--;
  if (end < MIN_SIGN_KEY_BYTES) {
    throw new UsageError(
      `Invalid --sign-key-file "${path}": the key has ${end} bytes, at least ` +
        `${MIN_SIGN_KEY_BYTES} are needed`,
      { hint: "make one with: head -c 32 /dev/urandom | base64 > bundle.key" },
    );
  }
  return bytes.subarray(0, end);
}

/** A writable over a file that syncs it to disk before closing it. */
function fileSink(file: Deno.FsFile): WritableStream<Uint8Array> {
  return new WritableStream({
    async write(chunk) {
      for (let done = 0; done < chunk.length;) done += await file.write(chunk.subarray(done));
    },
    async close() {
      await file.sync();
      file.close();
    },
    abort() {
      file.close();
    },
  });
}

/** A writable over stdout that leaves stdout open. */
function stdoutSink(): WritableStream<Uint8Array> {
  return new WritableStream({
    async write(chunk) {
      for (let done = 0; done < chunk.length;) {
        done += await Deno.stdout.write(chunk.subarray(done));
      }
    },
  });
}

interface ExportOptions {
  since?: string;
  until?: string;
  session?: string;
  output: string;
  signKeyFile?: string;
}

async function runExport(opts: ExportOptions): Promise<void> {
  const now = Date.now();
  const since = opts.since === undefined ? undefined : parseTimeFlag("--since", opts.since, now);
  const until = opts.until === undefined ? undefined : parseTimeFlag("--until", opts.until, now);
  if (since !== undefined && until !== undefined && until <= since) {
    throw new UsageError(`Invalid --until "${opts.until}": it must be later than --since`);
  }
  const signKey = opts.signKeyFile === undefined ? undefined : readSignKey(opts.signKeyFile);
  const toStdout = opts.output === "-";
  if (toStdout && Deno.stdout.isTerminal()) {
    throw new UsageError("Refusing to write a gzip bundle to a terminal", {
      hint: "give -o FILE, or redirect stdout",
    });
  }
  const { journal, dataDir: dir } = openForReading();
  try {
    const session = opts.session === undefined ? undefined : findSession(journal, opts.session).id;
    const host = { id: loadOrCreateHostId(dir), name: Deno.hostname() };
    const write = (output: WritableStream<Uint8Array>) =>
      exportBundle(journal, {
        output,
        host,
        ...(since === undefined ? {} : { since }),
        ...(until === undefined ? {} : { until }),
        ...(session === undefined ? {} : { session }),
        ...(signKey === undefined ? {} : { signKey }),
      });
    const result = toStdout ? await write(stdoutSink()) : await writeAtomically(opts.output, write);
    const where = toStdout ? "stdout" : `"${opts.output}"`;
    eprintln(
      `sentry: exported ${counted(result.events, "event")} of ` +
        `${counted(result.sessions, "session")} to ${where} ` +
        `(${formatBytes(result.bytes)}${result.signed ? ", signed" : ""})`,
    );
    eprintln(`sentry: chain head ${result.head}`);
    if (result.events === 0) eprintln("sentry: warning: no events matched; the bundle is empty");
  } finally {
    journal.close();
  }
}

/**
 * Writes a file through a temporary file (mode 0600) in the same directory, renamed over the
 * target once complete, so that a reader never sees half a bundle.
 */
async function writeAtomically<T>(
  path: string,
  write: (output: WritableStream<Uint8Array>) => Promise<T>,
): Promise<T> {
  const temp = join(dirname(path), `.${basename(path)}.${Deno.pid}.${Date.now()}.tmp`);
  let file: Deno.FsFile;
  try {
    file = await Deno.open(temp, { write: true, createNew: true, mode: 0o600 });
  } catch (error) {
    const reason = (error as Error).message.replace(/: \w+ '.*'$/, "");
    throw new UsageError(`Cannot write "${path}": ${reason}`);
  }
  try {
    await Deno.chmod(temp, 0o600);
    const result = await write(fileSink(file));
    await Deno.rename(temp, path);
    return result;
  } catch (error) {
    await Deno.remove(temp).catch(() => {});
    throw error;
  }
}

interface ImportOptions {
  data?: string;
  /** `sqlite` or a `postgres://` URL; else the config file's `server.store`, else sqlite. */
  store?: string;
  signKeyFile?: string;
  key?: string;
  dryRun?: boolean;
  json?: boolean;
}

function describeSignature(status: SignatureStatus): string {
  switch (status) {
    case "verified":
      return "signature verified";
    case "unchecked":
      return "signed, but not checked: pass --sign-key-file to check it";
    case "none":
      return "not signed";
  }
}

function describeBundle(summary: BundleSummary): string {
  const { host } = summary.header;
  return `host "${host.name}" (${host.id}), written ${summary.header.created_at}`;
}

async function openBundle(path: string): Promise<ReadableStream<Uint8Array<ArrayBuffer>>> {
  try {
    return (await Deno.open(path, { read: true })).readable;
  } catch (error) {
    throw new UsageError(`Cannot read bundle "${path}": ${(error as Error).message}`);
  }
}

/** The owner key for `--key ID|NAME`: one of the collector's keys, active or revoked. */
function findKey(
  keys: readonly { id: string; name: string; revoked_at: string | null }[],
  ref: string,
): { id: string; name: string } {
  const key = keys.find((k) => k.id === ref || (k.name === ref && k.revoked_at === null));
  if (key === undefined) {
    throw new UsageError(`Unknown --key "${ref}": no key of this collector has that id or name`, {
      hint: "list keys with: sentry server keys list",
    });
  }
  return key;
}

/** The keys of a SQLite collector in `dir`, read without creating anything there. */
function localKeys(dir: string): KeyInfo[] {
  try {
    if (!Deno.statSync(dir).isDirectory) return [];
  } catch {
    return [];
  }
  return openKeyStore(dir).list();
}

async function runImport(path: string, opts: ImportOptions): Promise<void> {
  const signKey = opts.signKeyFile === undefined ? undefined : readSignKey(opts.signKeyFile);
  const url = await collectorStoreUrl(opts);
  const dir = opts.data ?? join(dataDir(Deno.env.toObject()), COLLECTOR_DIR);
  // A PostgreSQL store is opened first, to check --key before the (long) verification; a SQLite
  // collector's directory is created only once the bundle has verified.
  let store: CollectorStore | null = null;
  try {
    let owner: { id: string; name: string } | undefined;
    if (!opts.dryRun) {
      if (url !== null) store = await openCollectorStore(opts);
      if (opts.key !== undefined) {
        owner = findKey(store === null ? localKeys(dir) : await store.listKeys(), opts.key);
      }
    }
    await importInto(path, {
      opts,
      signKey,
      dir,
      owner,
      store: async () => store ??= await openCollectorStore({ data: dir, store: "sqlite" }),
    });
  } finally {
    await store?.close();
  }
}

/** Verifies the bundle, then (unless --dry-run) stores it in the store `store()` opens. */
async function importInto(
  path: string,
  o: {
    opts: ImportOptions;
    signKey: Uint8Array | undefined;
    dir: string;
    owner: { id: string; name: string } | undefined;
    store: () => Promise<CollectorStore>;
  },
): Promise<void> {
  const { opts, signKey, owner } = o;
  // Verify the whole bundle before anything is created or stored.
  const bundle = await verifyBundle(
    await openBundle(path),
    signKey === undefined ? {} : { signKey },
  ).catch((error) => {
    if (error instanceof BundleError) {
      throw new UsageError(`Rejected bundle "${path}": ${error.detail}; nothing was imported`, {
        hint: error.problem === "version"
          ? "upgrade Sentry on this machine"
          : "export the bundle again on its host, and compare the chain heads both print",
      });
    }
    throw error;
  });
  const summary = bundle.summary;
  if (opts.dryRun) {
    if (opts.json) {
      printJson({ file: path, stored: false, ...summarise(summary) });
      return;
    }
    println(
      `Verified "${path}": ${counted(summary.events, "event")} of ` +
        `${counted(summary.sessions, "session")} from ${describeBundle(summary)}; nothing ` +
        "stored (--dry-run)",
    );
    println(`chain head ${summary.head} (${describeSignature(summary.signature)})`);
    return;
  }
  const store = await o.store();
  // A host id belongs to the key that registered it, here as on the upload route: a bundle
  // filed under another key must not add to (or end) that host's sessions.
  const hostId = summary.header.host.id.toUpperCase();
  let binding: HostBinding | undefined;
  if (owner !== undefined) {
    binding = await store.bindHost({ hostId, key: owner });
    if (binding.outcome === "refused") {
      throw new UsageError(
        `Cannot import bundle "${path}": its host.id "${hostId}" is bound to another key ` +
          `("${binding.boundTo}"), not "${owner.id}"; nothing was imported`,
        { hint: `file it under the key that host uploads with: --key ${binding.boundTo}` },
      );
    }
  }
  const undoBinding = async () => {
    if (owner !== undefined && binding !== undefined) {
      await store.unbindHost({ hostId, keyId: owner.id, binding });
    }
  };
  const result = await storeBundle(store, {
    bundle,
    open: () => openBundle(path),
    ...(owner === undefined ? {} : { key: owner.id }),
  }).catch(async (error) => {
    await undoBinding();
    if (error instanceof IngestError) {
      throw new UsageError(
        `Cannot import bundle "${path}": ${error.message} on this collector; nothing was ` +
          "imported",
        { hint: "to file it under the key the host uploads with, pass --key ID" },
      );
    }
    if (error instanceof BundleError) {
      throw new ExitCode(1, `Cannot finish importing bundle "${path}": ${error.detail}`);
    }
    throw error;
  });
  await store.recordHostVisit({
    hostId,
    name: summary.header.host.name,
    keyId: result.key,
    keyName: owner?.name ?? "bundle",
    at: new Date().toISOString(),
    accepted: result.accepted,
    duplicates: result.duplicates,
    dropped: 0,
  });
  if (opts.json) {
    printJson({
      file: path,
      stored: true,
      accepted: result.accepted,
      duplicates: result.duplicates,
      stored_sessions: result.sessions,
      key: result.key,
      data: store.kind === "sqlite" ? o.dir : store.location,
      ...summarise(summary),
    });
    return;
  }
  println(
    `Imported "${path}" from ${describeBundle(summary)} into "${
      store.kind === "sqlite" ? o.dir : store.location
    }": ${result.accepted} events accepted, ${result.duplicates} duplicates, ` +
      `${counted(result.sessions, "session")} (owner ${result.key})`,
  );
  println(`chain head ${summary.head} (${describeSignature(summary.signature)})`);
}

function counted(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

function summarise(summary: BundleSummary): Record<string, unknown> {
  return {
    host: summary.header.host,
    created_at: summary.header.created_at,
    filter: summary.header.filter,
    events: summary.events,
    sessions: summary.sessions,
    first_ts: summary.firstTs,
    last_ts: summary.lastTs,
    head: summary.head,
    signature: summary.signature,
  };
}

/** Adds `sentry export` and `sentry import`. */
export function registerBundleCommands(program: Command): void {
  program.command("export").description(
    "write journaled events to a tamper-evident bundle, for a collector an air gap away",
  )
    .requiredOption("-o, --output <file|->", "the bundle (.jsonl.gz) to write; - for stdout")
    .option("--since <time>", "events at or after this: a duration such as 24h or 7d, or ISO")
    .option("--until <time>", "events before this: a duration such as 1h, or an ISO time")
    .option("-s, --session <id|last>", "only this session")
    .option("--sign-key-file <file>", "sign with this shared key (HMAC-SHA256)")
    .action(async (opts: ExportOptions) => {
      await runExport(opts);
    });
  program.command("import").description(
    "verify a bundle from `sentry export` and store it in the collector's store",
  )
    .argument("<bundle>", "the bundle file (.jsonl.gz)")
    .option("--data <dir>", "the collector's data directory (default: <data dir>/collector)")
    .option("--store <url>", "the collector's store: sqlite or a postgres:// URL")
    .option("--sign-key-file <file>", "require a signature by this shared key")
    .option("--key <id|name>", "file the sessions under this upload key (default: bundle:<host>)")
    .option("--dry-run", "verify only; store nothing")
    .option("--json", "print the outcome as one JSON object")
    .action(async (path: string, opts: ImportOptions) => {
      await runImport(path, opts);
    });
}
