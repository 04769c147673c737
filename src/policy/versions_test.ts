import assert from "node:assert/strict";
import { VERSION } from "../version.ts";
import { PolicyError } from "./errors.ts";
import { loadPolicy, parsePolicy, readTemplate, TEMPLATES } from "./loader.ts";
import { compareVersions, requireSentryVersion, sentryTooOld } from "./versions.ts";

Deno.test("compareVersions() orders by major, minor, patch, and a prerelease before its release", () => {
  const ordered = [
    "0.1.0",
    "0.1.1",
    "0.2.0",
    "0.10.0",
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "2.0.0",
  ];
  for (let i = 0; i < ordered.length; i++) {
    for (let j = 0; j < ordered.length; j++) {
      const a = ordered[i] as string;
      const b = ordered[j] as string;
      assert.equal(compareVersions(a, b), Math.sign(i - j), `${a} vs ${b}`);
    }
  }
  assert.throws(() => compareVersions("1.0", "1.0.0"), /Invalid version "1\.0"/);
});

Deno.test("sentryTooOld() names both versions when the policy needs a newer Sentry, and is null otherwise", () => {
  assert.equal(sentryTooOld("0.1.0", "0.1.0"), null);
  assert.equal(sentryTooOld("0.1.0", "0.2.0"), null);
  assert.equal(
    sentryTooOld("0.3.0", "0.2.5"),
    "this policy requires Sentry 0.3.0 or newer, and this is Sentry 0.2.5: upgrade Sentry, or use a version of the policy made for this one",
  );
  let failed: { path: PropertyKey[]; reason: string } | null = null;
  requireSentryVersion({ required_sentry_version: "1.0.0" }, (path, reason) => {
    failed = { path, reason };
  }, "0.9.0");
  assert.deepEqual(failed, {
    path: ["required_sentry_version"],
    reason:
      'field "required_sentry_version": this policy requires Sentry 1.0.0 or newer, and this is Sentry 0.9.0: upgrade Sentry, or use a version of the policy made for this one',
  });
});

Deno.test("parsePolicy() refuses a policy for a newer Sentry at its line, before the keys this Sentry does not know", () => {
  const text =
    "name: future\nversion: 2.0.0\nrequired_sentry_version: 99.0.0\nfiles:\n  newkey: 1\n";
  let error: unknown;
  try {
    parsePolicy(text, "future.yaml");
  } catch (e) {
    error = e;
  }
  assert.ok(error instanceof PolicyError);
  assert.equal(error.line, 3);
  assert.equal(error.field, "required_sentry_version");
  assert.equal(
    error.message,
    `Invalid policy at future.yaml:3:26: field "required_sentry_version": this policy requires Sentry 99.0.0 or newer, and this is Sentry ${VERSION}: upgrade Sentry, or use a version of the policy made for this one`,
  );
});

Deno.test("parsePolicy() accepts a policy for this Sentry and rejects a malformed version", () => {
  const ok = parsePolicy(`version: 1.2.3\nrequired_sentry_version: ${VERSION}\n`, "p.yaml");
  assert.equal(ok.version, "1.2.3");
  assert.throws(
    () => parsePolicy("version: one\n", "p.yaml"),
    /Invalid policy at p\.yaml:1:10: field "version": expected a version such as 1\.2\.0 \(got "one"\)/,
  );
});

Deno.test("every built-in template carries a version and a required Sentry version this Sentry meets", async () => {
  for (const name of TEMPLATES) {
    const own = parsePolicy(await readTemplate(name), name);
    assert.match(own.version ?? "", /^\d+\.\d+\.\d+$/, name);
    assert.equal(sentryTooOld(own.required_sentry_version ?? "99.0.0"), null, name);
    await loadPolicy(name);
  }
});

Deno.test("a file that extends a template for a newer Sentry is refused at the parent's line", async () => {
  const files: Record<string, string> = {
    "/p/child.yaml": "name: child\nextends: ./parent.yaml\n",
    "/p/parent.yaml": "name: parent\nrequired_sentry_version: 50.0.0\n",
  };
  await assert.rejects(
    loadPolicy("/p/child.yaml", { readFile: (p) => Promise.resolve(files[p] ?? ""), cwd: "/p" }),
    /Invalid policy at \.\/parent\.yaml:2:26: field "required_sentry_version": this policy requires Sentry 50\.0\.0/,
  );
});
