/**
 * The API's bearer token: random, created at first use, and kept readable by its owner only.
 *
 * @module
 */

import { join } from "node:path";

/** The token's file name inside the data directory. */
export const TOKEN_FILE = "api-token";

/**
 * Returns the API token stored in `dataDir`, creating it (32 random bytes, base64url) on first
 * use. The file is mode 0600; a looser mode found on an existing file is narrowed, because the
 * token can pause agents and roll back files. The data directory is created (0700) if missing.
 *
 * @throws {Error} when the file cannot be read or written, or holds no token.
 */
export function loadOrCreateToken(dataDir: string): string {
  const path = join(dataDir, TOKEN_FILE);
  try {
    Deno.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    let token: string;
    try {
      token = Deno.readTextFileSync(path).trim();
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
      token = encodeBase64Url(crypto.getRandomValues(new Uint8Array(32)));
      // Written whole under a private name, then linked into place: two processes starting at
      // once never overwrite each other's token, nor read one half written.
      const tmp = `${path}.${crypto.randomUUID()}.tmp`;
      Deno.writeTextFileSync(tmp, `${token}\n`, { createNew: true, mode: 0o600 });
      try {
        Deno.linkSync(tmp, path);
      } catch (raced) {
        if (!(raced instanceof Deno.errors.AlreadyExists)) throw raced;
        token = Deno.readTextFileSync(path).trim();
      } finally {
        Deno.removeSync(tmp);
      }
    }
    if (Deno.build.os !== "windows" && ((Deno.statSync(path).mode ?? 0) & 0o077) !== 0) {
      Deno.chmodSync(path, 0o600);
    }
    if (token === "") throw new Error("the file is empty");
    return token;
  } catch (cause) {
    throw new Error(`Cannot load the API token "${path}": ${(cause as Error).message}`, { cause });
  }
}

/** Encodes bytes as base64url without padding (RFC 4648, section 5). */
function encodeBase64Url(bytes: Uint8Array): string {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
