/**
 * This host's sync identity: a random ULID made once and kept in the data directory, so that a
 * collector can tell hosts apart even when they share a name.
 *
 * @module
 */

import { join } from "node:path";
import { createUlid } from "../events/mod.ts";

/** The host id's file name inside the data directory. */
export const HOST_ID_FILE = "host-id";

/**
 * Returns the host id stored in `dataDir`, creating it on first use. Two processes starting at
 * once agree on one id.
 *
 * @throws {Error} when the file cannot be read or written.
 */
export function loadOrCreateHostId(dataDir: string): string {
  const path = join(dataDir, HOST_ID_FILE);
  try {
    const existing = Deno.readTextFileSync(path).trim();
    if (/^[0-9A-HJKMNP-TV-Z]{26}$/.test(existing)) return existing;
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) {
      throw new Error(`Cannot read the host id "${path}": ${(error as Error).message}`, {
        cause: error,
      });
    }
  }
  const id = createUlid()();
  try {
    Deno.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    Deno.writeTextFileSync(path, `${id}\n`, { createNew: true, mode: 0o600 });
    return id;
  } catch (error) {
    if (error instanceof Deno.errors.AlreadyExists) {
      return Deno.readTextFileSync(path).trim();
    }
    throw new Error(`Cannot write the host id "${path}": ${(error as Error).message}`, {
      cause: error,
    });
  }
}
