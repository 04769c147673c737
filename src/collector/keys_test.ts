import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { KeyError, KEYS_FILE, openKeyStore } from "./keys.ts";

function withDir(body: (dir: string) => void | Promise<void>): Promise<void> {
  const dir = Deno.makeTempDirSync({ prefix: "sentry-keys-" });
  return Promise.resolve(body(dir)).finally(() => Deno.removeSync(dir, { recursive: true }));
}

Deno.test("add() returns sk_ and 52 base32 characters once, and stores only the SHA-256", async () => {
  await withDir((dir) => {
    const store = openKeyStore(dir, { now: () => Date.UTC(2026, 0, 2) });
    const { key, info } = store.add("laptop");
    assert.match(key, /^sk_[a-z2-7]{52}$/);
    assert.match(info.id, /^k_[0-9A-Z]{26}$/);
    assert.equal(info.created_at, "2026-01-02T00:00:00.000Z");
    assert.equal(info.revoked_at, null);
    const path = join(dir, KEYS_FILE);
    assert.equal(Deno.statSync(path).mode! & 0o777, 0o600);
    const text = Deno.readTextFileSync(path);
    assert.ok(!text.includes(key.slice(3)), "the secret is not in the file");
    assert.ok(text.includes(createHash("sha256").update(key).digest("hex")));
    assert.deepEqual(store.list(), [info]);
    assert.ok(!JSON.stringify(store.list()).includes("sha256"), "list() shows no hash");
    // 256 random bits: two keys differ.
    assert.notEqual(store.add("desktop").key, key);
  });
});

Deno.test("verify() accepts an active key only, and sees a revoke made by another store", async () => {
  await withDir((dir) => {
    const store = openKeyStore(dir);
    const a = store.add("a");
    const b = store.add("b");
    assert.equal(store.verify(a.key)?.id, a.info.id);
    assert.equal(store.verify(b.key)?.name, "b");
    assert.equal(store.verify(a.key + "x"), null);
    assert.equal(store.verify(""), null);
    assert.equal(store.verify(a.key.toUpperCase()), null);
    const other = openKeyStore(dir);
    assert.equal(other.revoke(a.info.id).id, a.info.id);
    assert.equal(store.verify(a.key), null, "the revoke reached the first store");
    assert.equal(store.verify(b.key)?.id, b.info.id);
  });
});

Deno.test("names are unique among active keys, and a revoked key's name can be reused", async () => {
  await withDir((dir) => {
    const store = openKeyStore(dir);
    const first = store.add("build-7");
    assert.throws(() => store.add("build-7"), (e) => {
      assert.ok(e instanceof KeyError);
      assert.equal(e.field, "name");
      assert.match(e.message, /^Invalid key name "build-7": an active key has it$/);
      return true;
    });
    const revoked = store.revoke("build-7");
    assert.equal(revoked.id, first.info.id);
    assert.notEqual(revoked.revoked_at, null);
    const again = store.revoke(first.info.id);
    assert.equal(again.revoked_at, revoked.revoked_at, "a second revoke changes nothing");
    const second = store.add("build-7");
    assert.notEqual(second.info.id, first.info.id);
    // By name, revoke picks the active key.
    assert.equal(store.revoke("build-7").id, second.info.id);
    assert.equal(store.list().length, 2);
    assert.throws(() => store.revoke("nobody"), (e) => e instanceof KeyError && e.field === "key");
  });
});

Deno.test("add() refuses names that are empty, too long, odd or shaped like a key id", async () => {
  await withDir((dir) => {
    const store = openKeyStore(dir);
    for (const name of ["", "a b", "-x", "x".repeat(65), "é", "k_01J00000000000000000000000"]) {
      assert.throws(() => store.add(name), (e) => {
        assert.ok(e instanceof KeyError, name);
        assert.equal(e.field, "name");
        assert.ok(!e.message.includes("\n"));
        return true;
      });
    }
    assert.equal(store.list().length, 0);
    assert.ok(store.add("x".repeat(64)).key.startsWith("sk_"));
  });
});

Deno.test("a corrupt keys.json is an error naming the file, never an open door", async () => {
  await withDir((dir) => {
    Deno.writeTextFileSync(join(dir, KEYS_FILE), "{not json", { mode: 0o600 });
    const store = openKeyStore(dir);
    assert.throws(() => store.verify("sk_whatever"), /Cannot read key store ".*keys\.json"/);
    assert.throws(() => store.add("x"), /Cannot read key store/);
  });
});

Deno.test("keys added by several processes at once all land in keys.json", async () => {
  await withDir(async (dir) => {
    const module = new URL("./keys.ts", import.meta.url).href;
    const children = Array.from({ length: 4 }, (_, p) =>
      new Deno.Command(Deno.execPath(), {
        args: [
          "eval",
          `const { openKeyStore } = await import(${JSON.stringify(module)});
           const store = openKeyStore(${JSON.stringify(dir)});
           for (let i = 0; i < 5; i++) store.add("p${p}-" + i);`,
        ],
        stdout: "null",
        stderr: "piped",
      }).output());
    for (const out of await Promise.all(children)) {
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    }
    const names = openKeyStore(dir).list().map((k) => k.name).sort();
    assert.equal(names.length, 20);
    assert.equal(new Set(names).size, 20);
    assert.deepEqual(Deno.readDirSync(dir).map((e) => e.name).toArray(), [KEYS_FILE]);
  });
});
