import assert from "node:assert/strict";
import { freeSpace } from "./statvfs_linux.ts";

Deno.test({
  name: "freeSpace() reads what df reads: the bytes and inodes left for an unprivileged writer",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const free = freeSpace(dir);
      assert.ok(free !== null);
      const out = await new Deno.Command("df", { args: ["-B1", "--output=avail", dir] }).output();
      const avail = Number(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1));
      // The disk is in use by the rest of the suite: within 64 MiB of df's reading.
      assert.ok(Math.abs(free.bytes - avail) < 64 << 20, `${free.bytes} vs df ${avail}`);
      assert.ok(free.inodes > 0);
      assert.equal(freeSpace(`${dir}/does/not/exist`), null);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
