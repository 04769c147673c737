import assert from "node:assert/strict";
import {
  Beneath,
  encodeOpenHow,
  encodeTimes,
  O,
  openFailure,
  RESOLVE_STRICT,
  splitRel,
} from "./beneath_linux.ts";

Deno.test("splitRel() splits a root-relative path into the directory to open and the name", () => {
  assert.deepEqual(splitRel("a.txt"), { parent: ".", name: "a.txt" });
  assert.deepEqual(splitRel("src/util/h.py"), { parent: "src/util", name: "h.py" });
});

Deno.test("splitRel() refuses what could leave the root or name it", () => {
  for (const bad of ["", "/etc/passwd", "a/../b", "..", "./a", "a//b", "a/", "a\0b"]) {
    assert.throws(() => splitRel(bad), RangeError, JSON.stringify(bad));
  }
});

Deno.test("encodeOpenHow() lays out struct open_how as three little-endian u64", () => {
  const how = encodeOpenHow({ flags: O.WRONLY | O.CREAT, mode: 0o600, resolve: RESOLVE_STRICT });
  const view = new DataView(how.buffer);
  assert.equal(how.length, 24);
  assert.equal(view.getBigUint64(0, true), 0o101n);
  assert.equal(view.getBigUint64(8, true), 0o600n);
  assert.equal(view.getBigUint64(16, true), 0x0en);
});

Deno.test("encodeTimes() splits milliseconds into seconds and nanoseconds, before 1970 too", () => {
  const view = new DataView(encodeTimes(1_704_067_200_123, -1).buffer);
  assert.equal(view.getBigInt64(0, true), 1_704_067_200n);
  assert.equal(view.getBigInt64(8, true), 123_000_000n);
  assert.equal(view.getBigInt64(16, true), -1n);
  assert.equal(view.getBigInt64(24, true), 999_000_000n);
});

Deno.test("openFailure() names the path and says a symlink was refused", () => {
  assert.match(openFailure(40, "/w/src/a"), /^refusing to follow "\/w\/src\/a": .*symlink/);
  assert.equal(openFailure(2, "/w/x"), `"/w/x" is missing`);
});

Deno.test({
  name: "Beneath.open() refuses a directory swapped for a symlink, naming the path",
  ignore: Deno.build.os !== "linux",
  fn() {
    const dir = Deno.realPathSync(Deno.makeTempDirSync());
    try {
      Deno.mkdirSync(`${dir}/ws/real`, { recursive: true });
      Deno.mkdirSync(`${dir}/outside`);
      Deno.symlinkSync(`${dir}/outside`, `${dir}/ws/link`);
      const fs = new Beneath(`${dir}/ws`);
      try {
        const at = fs.at("real/a.txt");
        at.close();
        assert.throws(() => fs.at("link/a.txt"), (e: Error & { code?: string }) => {
          assert.equal(e.code, "ELOOP");
          assert.match(e.message, new RegExp(`refusing to follow "${dir}/ws/link"`));
          return true;
        });
      } finally {
        fs.close();
      }
      assert.throws(() => new Beneath(`${dir}/ws/link/x`), /refusing to follow/);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
