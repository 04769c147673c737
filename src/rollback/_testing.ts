/**
 * What the rollback tests share: a sample tree, a digest of a tree that says whether two
 * states are identical, and real processes that damage it. Private to src/rollback.
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";

/** A temporary workspace and data directory, removed by `cleanup`. */
export interface Sandbox {
  /** The parent of everything. */
  dir: string;
  /** The protected workspace. */
  ws: string;
  /** Sentry's data directory. */
  home: string;
  cleanup: () => void;
}

/** Creates a sandbox under `base` (the system temp directory by default). */
export function sandbox(base?: string): Sandbox {
  const dir = Deno.makeTempDirSync({ prefix: "sentry_rollback_", ...(base ? { dir: base } : {}) });
  const ws = `${dir}/ws`;
  const home = `${dir}/home`;
  Deno.mkdirSync(ws);
  return {
    dir,
    ws: Deno.realPathSync(ws),
    home,
    cleanup: () => {
      // Read-only directories inside must be writable again to be removed (as non-root).
      new Deno.Command("chmod", { args: ["-R", "u+rwx", dir], stderr: "null" }).outputSync();
      Deno.removeSync(dir, { recursive: true });
    },
  };
}

/** A deterministic byte pattern that does not compress. */
export function bytes(size: number, seed: number): Uint8Array {
  const out = new Uint8Array(size);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = s & 0xff;
  }
  return out;
}

/**
 * Fills a workspace with text and binary files (one of 2 MiB, stored as a loose blob), empty
 * and nested directories, relative, absolute and dangling symlinks, and assorted modes.
 */
export function makeTree(ws: string): void {
  const w = (rel: string, data: string | Uint8Array, mode = 0o644) => {
    Deno.mkdirSync(`${ws}/${rel}`.replace(/\/[^/]+$/, ""), { recursive: true });
    if (typeof data === "string") Deno.writeTextFileSync(`${ws}/${rel}`, data);
    else Deno.writeFileSync(`${ws}/${rel}`, data);
    Deno.chmodSync(`${ws}/${rel}`, mode);
  };
  w("README.md", "# Project\n\nSome text.\n");
  w("src/main.py", "print('hello')\n".repeat(50));
  w("src/util/helpers.py", "def f():\n    return 1\n");
  w("src/util/data.bin", bytes(4096, 7));
  w("src/deep/a/b/c/leaf.txt", "leaf\n");
  for (let i = 0; i < 40; i++) w(`src/mod${i % 4}/file${i}.txt`, `file ${i}\n`.repeat(i + 1));
  w("assets/big.bin", bytes(2 * 1024 * 1024, 42));
  w("assets/logo.png", bytes(30_000, 3));
  w("bin/run.sh", "#!/bin/sh\necho run\n", 0o755);
  w("secrets/key.pem", "-----BEGIN KEY-----\n", 0o600);
  w("docs/readonly.txt", "do not edit\n", 0o444);
  w("empty.txt", "");
  Deno.mkdirSync(`${ws}/empty_dir`);
  Deno.mkdirSync(`${ws}/nested_empty/inner`, { recursive: true });
  Deno.mkdirSync(`${ws}/private`, { mode: 0o750 });
  Deno.chmodSync(`${ws}/private`, 0o750);
  w("private/note.txt", "private\n");
  Deno.symlinkSync("../README.md", `${ws}/src/readme_link`);
  Deno.symlinkSync(`${ws}/assets/logo.png`, `${ws}/logo_abs`);
  Deno.symlinkSync("does/not/exist", `${ws}/dangling`);
  Deno.symlinkSync("src/util", `${ws}/util_dir_link`);
  // Set distinct, old mtimes (to the millisecond) so a restore that forgets them is caught.
  let t = Date.UTC(2024, 0, 1, 12, 0, 0, 123);
  const all: string[] = [];
  const walk = (dir: string) => {
    for (const e of Deno.readDirSync(dir)) {
      const p = `${dir}/${e.name}`;
      if (e.isDirectory) walk(p);
      if (!e.isSymlink) all.push(p);
    }
  };
  walk(ws);
  all.sort((a, b) => b.length - a.length);
  for (const p of all) {
    t += 1_001;
    Deno.utimeSync(p, new Date(t), new Date(t));
  }
  Deno.utimeSync(ws, new Date(t + 5), new Date(t + 7));
}

/**
 * Everything rollback promises to restore, per path: type, mode, mtime, size and SHA-256 for
 * files; mode and mtime for directories; the target for symlinks. Never follows a symlink.
 */
export function digestTree(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const visit = (abs: string, rel: string) => {
    const info = Deno.lstatSync(abs);
    const mode = ((info.mode ?? 0) & 0o7777).toString(8);
    const mtime = info.mtime?.getTime();
    if (info.isSymlink) out[rel] = `symlink -> ${Deno.readLinkSync(abs)}`;
    else if (info.isFile) {
      const hash = createHash("sha256").update(Deno.readFileSync(abs)).digest("hex");
      out[rel] = `file ${mode} ${mtime} ${info.size} ${hash}`;
    } else if (info.isDirectory) {
      out[rel] = `dir ${mode} ${mtime}`;
      for (const e of Deno.readDirSync(abs)) {
        visit(`${abs}/${e.name}`, rel === "." ? e.name : `${rel}/${e.name}`);
      }
    } else out[rel] = "other";
  };
  visit(root, ".");
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => (a < b ? -1 : 1)));
}

/** Asserts that two digests are equal, listing the paths that differ. */
export function assertSameTree(
  actual: Record<string, string>,
  expected: Record<string, string>,
): void {
  const diff: string[] = [];
  for (const k of new Set([...Object.keys(actual), ...Object.keys(expected)])) {
    if (actual[k] !== expected[k]) {
      diff.push(`${k}: ${expected[k] ?? "(absent)"} => ${actual[k] ?? "(absent)"}`);
    }
  }
  assert.deepEqual(diff, [], `trees differ:\n${diff.slice(0, 20).join("\n")}`);
}

/** Runs a shell script in a directory with a real `sh`, and checks that it succeeded. */
export function sh(cwd: string, script: string): void {
  const out = new Deno.Command("sh", { args: ["-ec", script], cwd, stderr: "piped" })
    .outputSync();
  assert.ok(out.success, `sh failed: ${new TextDecoder().decode(out.stderr)}`);
}

/** Runs a Python script with arguments, and checks that it succeeded. */
export function py(cwd: string, code: string, args: readonly string[] = []): void {
  const out = new Deno.Command("python3", { args: ["-c", code, ...args], cwd, stderr: "piped" })
    .outputSync();
  assert.ok(out.success, `python3 failed: ${new TextDecoder().decode(out.stderr)}`);
}

/** A listing of /etc's top level with each entry's mtime and size, and /etc/passwd's hash. */
export function etcState(): string {
  const lines: string[] = [];
  for (const e of [...Deno.readDirSync("/etc")].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    try {
      const info = Deno.lstatSync(`/etc/${e.name}`);
      lines.push(`${e.name} ${info.mtime?.getTime()} ${info.size}`);
    } catch {
      lines.push(`${e.name} ?`);
    }
  }
  const passwd = createHash("sha256").update(Deno.readFileSync("/etc/passwd")).digest("hex");
  const etc = Deno.lstatSync("/etc");
  return `${etc.mtime?.getTime()} ${passwd}\n${lines.join("\n")}`;
}

/** A clock two seconds ahead, so a tree written just now is not "racily clean". */
export function aheadClock(): () => number {
  return () => Date.now() + 2_000;
}
