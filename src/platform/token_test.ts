import assert from "node:assert/strict";
import { join } from "node:path";
import { loadOrCreateToken, TOKEN_FILE } from "./token.ts";

Deno.test("loadOrCreateToken() creates a 32-byte base64url token with mode 0600", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const token = loadOrCreateToken(join(dir, "data"));
    assert.match(token, /^[A-Za-z0-9_-]{43}$/);
    const stat = Deno.statSync(join(dir, "data", TOKEN_FILE));
    assert.equal((stat.mode ?? 0) & 0o777, 0o600);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("loadOrCreateToken() returns the same token on later calls", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const first = loadOrCreateToken(dir);
    assert.equal(loadOrCreateToken(dir), first);
    assert.notEqual(first, loadOrCreateToken(Deno.makeTempDirSync({ dir })));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("loadOrCreateToken() narrows a looser mode to 0600", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const path = join(dir, TOKEN_FILE);
    Deno.writeTextFileSync(path, "abc\n", { mode: 0o644 });
    Deno.chmodSync(path, 0o644);
    assert.equal(loadOrCreateToken(dir), "abc");
    assert.equal((Deno.statSync(path).mode ?? 0) & 0o777, 0o600);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
