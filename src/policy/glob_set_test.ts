import assert from "node:assert/strict";
import picomatch from "picomatch";
import { GlobSet } from "./glob_set.ts";

const GLOBS = [
  "/home/a/.ssh/**",
  "/home/a/.kube/config",
  "/home/a/.cargo/credentials*",
  "/etc/cron*/**",
  "/etc/shadow",
  "/lib*/**",
  "/(|private/)etc/**",
  "/dev/sd*",
  "**/.env",
  "**/.env.*",
  "**/*.pem",
  "**/id_rsa*",
  "**/.git/hooks/**",
  "**/*export*.csv",
  "/work/p/**",
  "/work/p/{src,tests}/**/*.ts",
  "/tmp/[ab]*.log",
  "/",
];

const PATHS = [
  "/home/a/.ssh/id_rsa",
  "/home/a/.ssh",
  "/home/a/.sshx/id",
  "/home/a/.kube/config",
  "/home/a/.kube/config2",
  "/home/a/.cargo/credentials.toml",
  "/etc/cron.d/job",
  "/etc/crontab",
  "/etc/shadow",
  "/private/etc/hosts",
  "/etc/hosts",
  "/lib/x86_64-linux-gnu/libc.so.6",
  "/lib64/ld.so",
  "/dev/sda",
  "/dev/sda1",
  "/work/p/.env",
  "/work/p/.env.local",
  "/work/p/config/.env.example",
  "/work/p/key.pem",
  "/work/p/a/b/c/cert.pem",
  "/root/.ssh/id_rsa.pub",
  "/work/p/.git/hooks/pre-commit",
  "/work/p/sub/.git/hooks/x",
  "/work/p/reports/user_export_2024.csv",
  "/work/p/src/a/b.ts",
  "/work/p/tests/x.ts",
  "/work/p/docs/x.ts",
  "/tmp/a1.log",
  "/tmp/c1.log",
  "/",
  "/work",
  "/workx/p/a",
];

Deno.test("`GlobSet` matches exactly what picomatch matches, glob by glob", () => {
  for (const glob of GLOBS) {
    const set = new GlobSet([glob]);
    const re = picomatch.makeRe(glob, { dot: true });
    for (const path of PATHS) {
      assert.equal(set.test(path), re.test(path), `${glob} on ${path}`);
    }
  }
});

Deno.test("`GlobSet.first()` reports the first matching glob in list order, by its label", () => {
  const labels = GLOBS.map((g, i) => `label${i}:${g}`);
  const set = new GlobSet(GLOBS, labels);
  for (const path of PATHS) {
    const index = GLOBS.findIndex((g) => picomatch.makeRe(g, { dot: true }).test(path));
    assert.equal(set.first(path), index < 0 ? undefined : labels[index], path);
    assert.equal(set.test(path), index >= 0, path);
  }
});

Deno.test("an empty `GlobSet` matches nothing", () => {
  const set = new GlobSet([]);
  assert.equal(set.test("/etc/passwd"), false);
  assert.equal(set.first("/etc/passwd"), undefined);
  assert.equal(set.size, 0);
});

Deno.test("`GlobSet` indexes an escaped glob by its real prefix", () => {
  const set = new GlobSet(["/work/my project \\(1\\)/**", "/work/a\\[b\\]/c.txt"]);
  assert.equal(set.test("/work/my project (1)/src/a.ts"), true);
  assert.equal(set.test("/work/a[b]/c.txt"), true);
  assert.equal(set.test("/work/my project 1/src/a.ts"), false);
});
