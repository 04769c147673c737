/**
 * Rollback under faults (issue 12): a snapshot that cannot capture a file fails whole and loudly,
 * on a real full disk (a small tmpfs as the store), instead of recording the file as unreadable
 * while saying it is protected.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { listSnapshots, openStore, snapshot } from "../src/rollback/mod.ts";

const why = Deno.build.os !== "linux"
  ? "needs Linux"
  : Deno.uid() !== 0
  ? "needs root to mount a small tmpfs"
  : null;
if (why !== null) {
  // deno-lint-ignore no-console
  console.warn(`skipping the rollback fault tests: ${why}`);
}

async function sh(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

Deno.test({
  name:
    "a full disk under the store is refused before a byte is copied, and one that fills while copying fails the snapshot whole, naming the file; no manifest is kept",
  ignore: why !== null,
  async fn() {
    const root = await Deno.makeTempDir({ prefix: "sentry-faults-" });
    const data = join(root, "data");
    const ws = join(root, "ws");
    await Deno.mkdir(data);
    await Deno.mkdir(ws);
    await sh("mount", ["-t", "tmpfs", "-o", "size=2m", "sentry-faults", data]);
    try {
      const big = join(ws, "big.bin");
      await Deno.writeFile(big, crypto.getRandomValues(new Uint8Array(65536)).slice(0, 1));
      const chunk = new Uint8Array(1 << 20);
      const file = await Deno.open(big, { write: true, truncate: true });
      for (let i = 0; i < 8; i++) {
        await file.write(crypto.getRandomValues(chunk.subarray(0, 65536)));
      }
      file.close();
      await Deno.truncate(big, 8 << 20);
      await Deno.writeTextFile(join(ws, "small.txt"), "small\n");
      const store = openStore(data);
      // Checked first: the store's filesystem has 2 MiB, the snapshot may need 8.
      await assert.rejects(
        () => snapshot(store, { roots: [ws], maxBytes: 1 << 30, session: "FULL" }),
        /it may need 8\.0 MiB .* on the store's filesystem .* which has [\d.]+ (KiB|MiB)/,
      );
      // And when the space goes while it copies (the check blinded here), the copy fails whole.
      await assert.rejects(
        () =>
          snapshot(store, {
            roots: [ws],
            maxBytes: 1 << 30,
            session: "FULL",
            freeSpace: () => null,
          }),
        (error: Error) => {
          assert.match(error.message, /could not hold a copy of ".*big\.bin"/);
          assert.match(error.message, /No space left|ENOSPC|os error 28/i);
          return true;
        },
      );
      assert.deepEqual(listSnapshots(store), [], "no manifest claims the file was protected");
    } finally {
      await sh("umount", [data]);
      await Deno.remove(root, { recursive: true });
    }
  },
});
