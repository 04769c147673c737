/**
 * The collector's API keys: one per host or fleet, made by `sentry server keys add`. A key is
 * shown once, when it is made; the store keeps only its SHA-256, so a stolen `keys.json` does
 * not let anyone upload. The file is JSON, mode 0600, replaced atomically (write a temporary
 * file, then rename), and re-read whenever it changes on disk, so a `sentry server keys revoke`
 * run beside a running collector takes effect at its next request.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { createHash, timingSafeEqual } from "node:crypto";
import { join } from "node:path";
import { createUlid } from "../events/mod.ts";

/** The key store's file name inside the collector's data directory. */
export const KEYS_FILE = "keys.json";

/** The prefix of every key `add` makes. */
export const KEY_PREFIX = "sk_";

/** A key as listed: everything but the secret, which is never stored. */
export interface KeyInfo {
  /** `k_` and a ULID; sessions uploaded with the key are filed under it. */
  id: string;
  /** Unique among active keys, such as `laptop` or `build-fleet`. */
  name: string;
  /** ISO 8601, UTC. */
  created_at: string;
  /** When it was revoked, or null while it is active. */
  revoked_at: string | null;
}

/** A key as stored: its info and the hex SHA-256 of the secret. */
interface StoredKey extends KeyInfo {
  sha256: string;
}

/** The file's shape. */
interface KeyFile {
  version: 1;
  keys: StoredKey[];
}

/** A new key: the secret (shown once) and its info. */
export interface NewKey {
  /** `sk_` and 52 base32 characters (256 random bits). Not stored anywhere. */
  key: string;
  info: KeyInfo;
}

/** The collector's keys. Get one with {@link openKeyStore}. */
export interface KeyStore {
  /** The `keys.json` file. */
  readonly path: string;
  /**
   * Makes a key named `name` and returns its secret, which cannot be shown again.
   *
   * @throws {KeyError} when the name is invalid or an active key has it.
   */
  add(name: string): NewKey;
  /** Every key, active and revoked, oldest first. */
  list(): KeyInfo[];
  /**
   * Revokes the key with this id, or the active key with this name, and returns it. Revoking a
   * revoked key does nothing and returns it as it is.
   *
   * @throws {KeyError} when no key matches.
   */
  revoke(ref: string): KeyInfo;
  /**
   * The active key whose secret this is, or null. Compares SHA-256 digests in constant time
   * against every stored key, so the time taken says nothing about the key.
   */
  verify(key: string): KeyInfo | null;
}

/** A bad key name or an unknown key: a usage problem. `field` names the input at fault. */
export class KeyError extends Error {
  /** The input at fault: `name` or `key`. */
  readonly field: string;

  /** Builds the error. */
  constructor(message: string, field: string) {
    super(message);
    this.name = "KeyError";
    this.field = field;
  }
}

/** Options for {@link openKeyStore}. */
export interface KeyStoreOptions {
  /** The wall clock; defaults to `Date.now`. */
  now?: () => number;
  /** Fills an array with random bytes; defaults to `crypto.getRandomValues`. */
  random?: (bytes: Uint8Array) => void;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const ID = /^k_[0-9A-HJKMNP-TV-Z]{26}$/;
const BASE32 = "abcdefghijklmnopqrstuvwxyz234567";
/** How long a writer waits for another one's lock before giving up. */
const LOCK_WAIT_MS = 3000;
/** A lock older than this was left by a process that died while writing. */
const LOCK_STALE_MS = 10_000;

/**
 * Opens the key store in `dir` (the collector's data directory), creating the directory (0700)
 * if needed. The file itself is created by the first `add`.
 *
 * @throws {Error} when the directory cannot be created.
 */
export function openKeyStore(dir: string, options: KeyStoreOptions = {}): KeyStore {
  const now = options.now ?? Date.now;
  const random = options.random ?? ((b: Uint8Array) => crypto.getRandomValues(b));
  const ulid = createUlid({ now, random });
  const path = join(dir, KEYS_FILE);
  Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  let cache: { stamp: string; file: KeyFile } | null = null;

  /** The file, re-read when its inode, size or mtime changed. */
  function load(): KeyFile {
    const stamp = stampOf(path);
    if (cache !== null && cache.stamp === stamp) return cache.file;
    const file = stamp === "" ? { version: 1 as const, keys: [] } : parseFile(path);
    cache = { stamp, file };
    return file;
  }

  function update<T>(change: (file: KeyFile) => T): T {
    return withLock(`${path}.lock`, () => {
      cache = null;
      const file = structuredClone(load());
      const result = change(file);
      writeAtomic(path, `${JSON.stringify(file, null, 2)}\n`);
      cache = null;
      return result;
    });
  }

  return {
    path,
    add(name) {
      checkKeyName(name);
      const key = newKeySecret(random);
      const info = update((file) => {
        if (file.keys.some((k) => k.name === name && k.revoked_at === null)) {
          throw new KeyError(`Invalid key name "${name}": an active key has it`, "name");
        }
        const stored: StoredKey = {
          id: `k_${ulid()}`,
          name,
          created_at: new Date(now()).toISOString(),
          revoked_at: null,
          sha256: sha256(key),
        };
        file.keys.push(stored);
        return publicInfo(stored);
      });
      return { key, info };
    },
    list() {
      return load().keys.map(publicInfo);
    },
    revoke(ref) {
      return update((file) => {
        const match = file.keys.find((k) => k.id === ref) ??
          file.keys.find((k) => k.name === ref && k.revoked_at === null) ??
          file.keys.findLast((k) => k.name === ref);
        if (match === undefined) {
          throw new KeyError(`No key "${ref}": give a key id or name from the list`, "key");
        }
        match.revoked_at ??= new Date(now()).toISOString();
        return publicInfo(match);
      });
    },
    verify(key) {
      const given = createHash("sha256").update(key).digest();
      let found: StoredKey | null = null;
      // Every stored digest is compared, whatever matched, so the time is the same.
      for (const k of load().keys) {
        const stored = Buffer.from(k.sha256, "hex");
        if (stored.length === given.length && timingSafeEqual(stored, given)) found = k;
      }
      return found === null || found.revoked_at !== null ? null : publicInfo(found);
    },
  };
}

/**
 * Checks a new key's name: 1 to 64 letters, digits, ".", "_" or "-", not shaped like a key id.
 *
 * @throws {KeyError} when it is invalid.
 */
export function checkKeyName(name: string): void {
  if (!NAME.test(name) || ID.test(name)) {
    throw new KeyError(
      `Invalid key name "${name}": use 1 to 64 letters, digits, ".", "_" or "-", ` +
        "starting with a letter or digit",
      "name",
    );
  }
}

/** A new key's secret: {@link KEY_PREFIX} and 52 base32 characters of 256 random bits. */
export function newKeySecret(random: (bytes: Uint8Array) => void): string {
  const bytes = new Uint8Array(32);
  random(bytes);
  return KEY_PREFIX + base32(bytes);
}

/** The hex SHA-256 of a key's secret: all a store keeps of it. */
export function keyDigest(secret: string): string {
  return sha256(secret);
}

function publicInfo(k: StoredKey): KeyInfo {
  return { id: k.id, name: k.name, created_at: k.created_at, revoked_at: k.revoked_at };
}

function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** RFC 4648 base32, lower case, without padding: 32 bytes give 52 characters. */
function base32(bytes: Uint8Array): string {
  let out = "";
  let acc = 0;
  let bits = 0;
  for (const byte of bytes) {
    acc = ((acc << 8) | byte) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += BASE32[(acc >> bits) & 31];
    }
  }
  if (bits > 0) out += BASE32[(acc << (5 - bits)) & 31];
  return out;
}

/** The file's identity and version, or "" when it does not exist. */
function stampOf(path: string): string {
  try {
    const s = Deno.statSync(path);
    return `${s.ino}:${s.size}:${s.mtime?.getTime()}`;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return "";
    throw new Error(`Cannot read key store "${path}": ${(error as Error).message}`, {
      cause: error,
    });
  }
}

function parseFile(path: string): KeyFile {
  let data: unknown;
  try {
    data = JSON.parse(Deno.readTextFileSync(path));
  } catch (cause) {
    throw new Error(`Cannot read key store "${path}": ${(cause as Error).message}`, { cause });
  }
  const file = data as Partial<KeyFile>;
  if (
    typeof data !== "object" || data === null || file.version !== 1 || !Array.isArray(file.keys)
  ) {
    throw new Error(`Cannot read key store "${path}": not a Sentry key file (version 1)`);
  }
  for (const [i, k] of file.keys.entries()) {
    if (
      typeof k?.id !== "string" || typeof k.name !== "string" ||
      typeof k.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(k.sha256) ||
      typeof k.created_at !== "string" ||
      (k.revoked_at !== null && typeof k.revoked_at !== "string")
    ) {
      throw new Error(`Cannot read key store "${path}": invalid entry keys[${i}]`);
    }
  }
  return file as KeyFile;
}

/** Writes a file with mode 0600 through a temporary file and a rename. */
function writeAtomic(path: string, text: string): void {
  const tmp = `${path}.${Deno.pid}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  try {
    const f = Deno.openSync(tmp, { write: true, createNew: true, mode: 0o600 });
    try {
      f.writeSync(new TextEncoder().encode(text));
      f.syncSync();
    } finally {
      f.close();
    }
    Deno.renameSync(tmp, path);
  } catch (cause) {
    try {
      Deno.removeSync(tmp);
    } catch {
      // Never created, or already renamed.
    }
    throw new Error(`Cannot write key store "${path}": ${(cause as Error).message}`, { cause });
  }
}

/** Runs `body` holding an exclusive lock file, so two `keys add` at once both land. */
function withLock<T>(lock: string, body: () => T): T {
  const deadline = Date.now() + LOCK_WAIT_MS;
  while (true) {
    try {
      Deno.openSync(lock, { write: true, createNew: true, mode: 0o600 }).close();
      break;
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
      try {
        const age = Date.now() - (Deno.statSync(lock).mtime?.getTime() ?? Date.now());
        if (age > LOCK_STALE_MS) Deno.removeSync(lock);
      } catch {
        // Gone meanwhile: try again.
      }
      if (Date.now() > deadline) {
        throw new Error(`Cannot lock key store: "${lock}" is held by another process`);
      }
      sleepSync(20);
    }
  }
  try {
    return body();
  } finally {
    try {
      Deno.removeSync(lock);
    } catch {
      // Removed as stale by another process.
    }
  }
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
