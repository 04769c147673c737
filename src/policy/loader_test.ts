import assert from "node:assert/strict";
import { PolicyError } from "./errors.ts";
import { isTemplateName, type LoadOptions, loadPolicy, parsePolicy, TEMPLATES } from "./loader.ts";
import { DEFAULT_DB_PORTS } from "./schema.ts";

/** An in-memory file system for `loadPolicy()`: absolute path to text. */
function memory(files: Record<string, string>): LoadOptions & { reads: string[] } {
  const reads: string[] = [];
  return {
    reads,
    cwd: "/p",
    readFile: (path) => {
      reads.push(path);
      const text = files[path];
      if (text === undefined) {
        return Promise.reject(new Deno.errors.NotFound(`No such file: ${path}`));
      }
      return Promise.resolve(text);
    },
  };
}

/** Asserts that `fn` throws a `PolicyError` with the given message parts and location. */
function policyError(
  fn: () => unknown,
  expected: { message: (string | RegExp)[]; line?: number; column?: number; field?: string },
): PolicyError {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  return checkPolicyError(caught, expected);
}

async function policyErrorAsync(
  promise: Promise<unknown>,
  expected: { message: (string | RegExp)[]; file?: string; field?: string },
): Promise<PolicyError> {
  let caught: unknown;
  try {
    await promise;
  } catch (error) {
    caught = error;
  }
  const error = checkPolicyError(caught, expected);
  if (expected.file !== undefined) assert.equal(error.file, expected.file);
  return error;
}

function checkPolicyError(
  caught: unknown,
  expected: { message: (string | RegExp)[]; line?: number; column?: number; field?: string },
): PolicyError {
  assert.ok(caught instanceof PolicyError, `expected a PolicyError, got ${caught}`);
  assert.equal(caught.name, "PolicyError");
  for (const part of expected.message) {
    if (typeof part === "string") {
      assert.ok(caught.message.includes(part), `"${caught.message}" should include ${part}`);
    } else {
      assert.match(caught.message, part);
    }
  }
  if (expected.line !== undefined) assert.equal(caught.line, expected.line, "line");
  if (expected.column !== undefined) assert.equal(caught.column, expected.column, "column");
  if (expected.field !== undefined) assert.equal(caught.field, expected.field, "field");
  assert.ok(!caught.message.includes("\n"), "one line");
  assert.ok(!caught.message.endsWith("."), "no final period");
  return caught;
}

// --- parsePolicy: YAML and schema ---------------------------------------------------------

Deno.test("`parsePolicy()` accepts an empty file and a file of comments", () => {
  assert.deepEqual(parsePolicy("", "p.yaml"), {});
  assert.deepEqual(parsePolicy("# nothing yet\n", "p.yaml"), {});
});

Deno.test("`parsePolicy()` fills schema defaults in sections and rules", () => {
  const policy = parsePolicy(
    [
      "files:",
      "  read:",
      "    deny: [~/.ssh/**]",
      "rules:",
      "  - id: env_read",
      "    description: Detect reads of .env files",
      "    match: { kind: file.read, target: '**/.env' }",
      "    risk: 40",
    ].join("\n"),
    "p.yaml",
  );
  assert.deepEqual(policy.files?.read, { allow: [], deny: ["~/.ssh/**"] });
  assert.deepEqual(policy.rules?.[0]?.exceptions, []);
  assert.equal(policy.rules?.[0]?.enabled, true);
});

Deno.test("`parsePolicy()` reports broken YAML as file:line:col with the reason", () => {
  const error = policyError(
    () => parsePolicy("name: x\nfiles:\n  read:\n    deny: [a\n", "p.yaml"),
    {
      message: [
        /^Invalid YAML at p\.yaml:5:1: /,
        "Flow sequence in block collection must be sufficiently indented and end with a ]",
      ],
      line: 5,
      column: 1,
    },
  );
  assert.equal(error.file, "p.yaml");
  assert.ok(error.cause !== undefined);
  assert.doesNotMatch(error.message, /at line \d+, column \d+/);
});

Deno.test("`parsePolicy()` reports a compact nested mapping at its line and column", () => {
  policyError(() => parsePolicy("name: ok\na: b: c\n", "x.yml"), {
    message: [/^Invalid YAML at x\.yml:2:4: Nested mappings are not allowed/],
    line: 2,
    column: 4,
  });
});

Deno.test("`parsePolicy()` rejects a duplicate key as invalid YAML at the second key", () => {
  policyError(() => parsePolicy("files:\n  read: {}\n  write: {}\n  read: {}\n", "p.yaml"), {
    message: ["Invalid YAML at p.yaml:4:3: Map keys must be unique"],
    line: 4,
    column: 3,
  });
});

Deno.test("`parsePolicy()` rejects a document that is not a mapping", () => {
  for (const text of ["hello\n", "- a\n- b\n", "42\n"]) {
    policyError(() => parsePolicy(text, "p.yaml"), {
      message: ["Invalid policy at p.yaml:1:1: a policy must be a mapping of keys to values"],
      line: 1,
      column: 1,
    });
  }
});

Deno.test("`parsePolicy()` names an unknown top-level key with its line and column", () => {
  policyError(() => parsePolicy("name: x\n\nmod: pause\n", "p.yaml"), {
    message: ['Invalid policy at p.yaml:3:1: unknown key "mod"'],
    line: 3,
    column: 1,
    field: "mod",
  });
});

Deno.test("`parsePolicy()` names an unknown nested key by its dotted path, line and column", () => {
  const text = [
    "name: x", // 1
    "files:", // 2
    "  read:", // 3
    "    deny:", // 4
    "      - ~/.ssh/**", // 5
    "  wirte:", // 6
    "    deny: []", // 7
  ].join("\n");
  policyError(() => parsePolicy(text, "./p.yaml"), {
    message: ['Invalid policy at ./p.yaml:6:3: unknown key "files.wirte"'],
    line: 6,
    column: 3,
    field: "files.wirte",
  });
});

Deno.test("`parsePolicy()` locates an unknown key inside a flow mapping", () => {
  policyError(() => parsePolicy("thresholds: { alert: 30, pausee: 60 }\n", "p.yaml"), {
    message: ['p.yaml:1:26: unknown key "thresholds.pausee"'],
    line: 1,
    column: 26,
    field: "thresholds.pausee",
  });
});

Deno.test("`parsePolicy()` names an unknown key in rules[1].match by its path and place", () => {
  const text = [
    "rules:", // 1
    "  - id: first", // 2
    "    description: Detect the first thing", // 3
    "    risk: 10", // 4
    "    match: { kind: file.read }", // 5
    "  - id: second", // 6
    "    description: Detect the second thing", // 7
    "    risk: 20", // 8
    "    match:", // 9
    "      kind: file.write", // 10
    "      targt: /etc/**", // 11
  ].join("\n");
  policyError(() => parsePolicy(text, "p.yaml"), {
    message: ['Invalid policy at p.yaml:11:7: unknown key "rules[1].match.targt"'],
    line: 11,
    column: 7,
    field: "rules[1].match.targt",
  });
});

Deno.test("`parsePolicy()` names a bad value's field and shows the value", () => {
  policyError(() => parsePolicy("name: x\nmode: bogus\n", "p.yaml"), {
    message: ['p.yaml:2:7: field "mode": invalid option', '(got "bogus")', '"monitor"'],
    line: 2,
    column: 7,
    field: "mode",
  });
  policyError(() => parsePolicy("thresholds:\n  alert: 101\n", "p.yaml"), {
    message: ['p.yaml:2:10: field "thresholds.alert": too big', "(got 101)"],
    line: 2,
    column: 10,
    field: "thresholds.alert",
  });
  policyError(() => parsePolicy("monitors:\n  files: yes\n", "p.yaml"), {
    message: ['field "monitors.files": expected boolean', '(got "yes")'],
    field: "monitors.files",
  });
});

Deno.test("`parsePolicy()` counts the other problems it does not show", () => {
  policyError(() => parsePolicy("mode: bogus\nthresholds: { alert: 500 }\n", "p.yaml"), {
    message: ["(and 1 more problem)"],
  });
  policyError(() => parsePolicy("mode: 1\nthresholds: { alert: 500, pause: -1 }\n", "p.yaml"), {
    message: ["(and 2 more problems)"],
  });
});

Deno.test("`parsePolicy()` rejects a process entry object with no fields", () => {
  policyError(() => parsePolicy("processes:\n  deny:\n    - {}\n", "p.yaml"), {
    message: ['p.yaml:3:7: field "processes.deny[0]": needs at least one of name, path or args'],
    line: 3,
    column: 7,
    field: "processes.deny[0]",
  });
});

// --- parsePolicy: globs, entries, regexes and rules ---------------------------------------

Deno.test("`parsePolicy()` names a bad glob and its field at the list item", () => {
  const text = "files:\n  read:\n    deny:\n      - ~/.ssh/**\n      - /a/{b\n";
  policyError(() => parsePolicy(text, "p.yaml"), {
    message: ['p.yaml:5:9: field "files.read.deny[1]": Bad glob "/a/{b": unbalanced "{"'],
    line: 5,
    column: 9,
    field: "files.read.deny[1]",
  });
});

Deno.test("`parsePolicy()` rejects a relative file glob, quoting it", () => {
  policyError(() => parsePolicy("files:\n  write:\n    allow: [src/**]\n", "p.yaml"), {
    message: ['field "files.write.allow[0]": Bad glob "src/**"', "absolute"],
    line: 3,
    column: 13,
    field: "files.write.allow[0]",
  });
});

Deno.test("`parsePolicy()` accepts variables in file globs without expanding them", () => {
  const policy = parsePolicy(
    "files:\n  write:\n    allow: ['${WORKSPACE}/**', '$TMPDIR/**', '**/.cache/**']\n",
    "p.yaml",
  );
  assert.deepEqual(policy.files?.write?.allow, ["${WORKSPACE}/**", "$TMPDIR/**", "**/.cache/**"]);
});

Deno.test("`parsePolicy()` names a bad CIDR and its field", () => {
  policyError(() => parsePolicy("network:\n  deny:\n    - 10.0.0.0/33\n", "p.yaml"), {
    message: ['p.yaml:3:7: field "network.deny[0]": Bad CIDR "10.0.0.0/33"'],
    line: 3,
    column: 7,
    field: "network.deny[0]",
  });
});

Deno.test("`parsePolicy()` names a bad port range and its field", () => {
  policyError(
    () => parsePolicy("network:\n  allow:\n    - ok.com\n    - localhost:9-3\n", "p.yaml"),
    {
      message: ['p.yaml:4:7: field "network.allow[1]": Bad port range "9-3"', '"localhost:9-3"'],
      line: 4,
      column: 7,
      field: "network.allow[1]",
    },
  );
  policyError(() => parsePolicy('database:\n  allow: ["db:0"]\n', "p.yaml"), {
    message: ['field "database.allow[0]": Bad port range "0"', '"db:0"'],
    line: 2,
    column: 11,
    field: "database.allow[0]",
  });
});

Deno.test("`parsePolicy()` names a bad regular expression in a process entry", () => {
  const text = 'processes:\n  deny:\n    - git\n    - name: git\n      args: "push (--force"\n';
  policyError(() => parsePolicy(text, "p.yaml"), {
    message: ['p.yaml:4:7: field "processes.deny[1]"', 'Bad regular expression "push (--force"'],
    line: 4,
    column: 7,
    field: "processes.deny[1]",
  });
});

Deno.test("`parsePolicy()` accepts a process path glob with ~ or ${WORKSPACE}, and rejects a relative one", () => {
  const ok = parsePolicy('processes:\n  allow: [~/bin/tool, "${WORKSPACE}/bin/*"]\n', "p.yaml");
  assert.deepEqual(ok.processes?.allow, ["~/bin/tool", "${WORKSPACE}/bin/*"]);
  policyError(
    () => parsePolicy("processes:\n  allow: [{ path: bin/tool }]\n", "p.yaml"),
    {
      message: ['field "processes.allow[0]"', '"bin/tool"', "absolute"],
      field: "processes.allow[0]",
    },
  );
});

Deno.test("`parsePolicy()` names an unknown rule kind and lists the kinds", () => {
  const text = [
    "rules:",
    "  - id: chmod_any",
    "    description: Detect mode changes",
    "    risk: 10",
    "    match:",
    "      kind: file.chmod",
  ].join("\n");
  policyError(() => parsePolicy(text, "p.yaml"), {
    message: ['p.yaml:6:13: field "rules[0].match.kind": Unknown kind "file.chmod"', "file.read"],
    line: 6,
    column: 13,
    field: "rules[0].match.kind",
  });
});

Deno.test("`parsePolicy()` names a bad kind in a rule exception", () => {
  const text = [
    "rules:",
    "  - id: env_read",
    "    description: Detect reads of .env files",
    "    risk: 10",
    "    match: { kind: file.read }",
    "    exceptions:",
    "      - kind: [file.read, nope]",
  ].join("\n");
  policyError(() => parsePolicy(text, "p.yaml"), {
    message: ['field "rules[0].exceptions[0].kind": Unknown kind "nope"'],
    line: 7,
    column: 15,
    field: "rules[0].exceptions[0].kind",
  });
});

Deno.test("`parsePolicy()` names a relative path target of a file rule", () => {
  const text = [
    "rules:",
    "  - id: rel",
    "    description: Detect something",
    "    risk: 10",
    "    match: { kind: file.read, target: rel/path }",
  ].join("\n");
  policyError(() => parsePolicy(text, "p.yaml"), {
    message: ['field "rules[0].match.target": Bad glob "rel/path"'],
    line: 5,
    column: 39,
    field: "rules[0].match.target",
  });
});

Deno.test("`parsePolicy()` accepts wildcard targets for non-file rules and kind globs", () => {
  const text = [
    "rules:",
    "  - id: pastebin",
    "    description: Detect uploads to paste sites",
    "    risk: 50",
    "    match: { kind: net.connect, target: '*pastebin*' }",
    "  - id: any_file_key",
    "    description: Detect key files",
    "    risk: 50",
    "    match: { kind: 'file.*', target: '**/*.pem' }",
  ].join("\n");
  assert.equal(parsePolicy(text, "p.yaml").rules?.length, 2);
});

Deno.test("`parsePolicy()` rejects a rule id that is not lowercase_with_underscores", () => {
  const text = "rules:\n  - id: BadId\n    description: Detect x\n    risk: 1\n    match: {}\n";
  policyError(() => parsePolicy(text, "p.yaml"), {
    message: ['p.yaml:2:9: field "rules[0].id": must be lowercase_with_underscores (got "BadId")'],
    line: 2,
    column: 9,
    field: "rules[0].id",
  });
});

Deno.test("`parsePolicy()` rejects a rule description that does not start with Detect", () => {
  const text = "rules:\n  - id: ok\n    description: Finds x\n    risk: 1\n    match: {}\n";
  policyError(() => parsePolicy(text, "p.yaml"), {
    message: ['p.yaml:3:18: field "rules[0].description": must start with "Detect"', '"Finds x"'],
    line: 3,
    column: 18,
    field: "rules[0].description",
  });
  // "Detection" is not the word "Detect".
  policyError(
    () =>
      parsePolicy(
        "rules:\n  - id: ok\n    description: Detection of x\n    risk: 1\n    match: {}\n",
        "p.yaml",
      ),
    { message: ['"Detection of x"'], field: "rules[0].description" },
  );
});

Deno.test("`parsePolicy()` rejects a rule risk above 100 and an unknown response", () => {
  policyError(
    () =>
      parsePolicy(
        "rules:\n  - id: ok\n    description: Detect x\n    risk: 101\n    match: {}\n",
        "p.yaml",
      ),
    { message: ['field "rules[0].risk"', "(got 101)"], line: 4, column: 11 },
  );
  policyError(
    () =>
      parsePolicy(
        "rules:\n  - id: ok\n    description: Detect x\n    risk: 1\n    response: nuke\n    match: {}\n",
        "p.yaml",
      ),
    { message: ['field "rules[0].response"', '(got "nuke")'], field: "rules[0].response" },
  );
});

Deno.test("`parsePolicy()` rejects duplicate rule ids at the second one", () => {
  const text = [
    "rules:",
    "  - id: same",
    "    description: Detect one",
    "    risk: 1",
    "    match: {}",
    "  - id: same",
    "    description: Detect two",
    "    risk: 2",
    "    match: {}",
  ].join("\n");
  policyError(() => parsePolicy(text, "p.yaml"), {
    message: ['p.yaml:6:9: field "rules[1].id": duplicate rule id "same"'],
    line: 6,
    column: 9,
    field: "rules[1].id",
  });
});

Deno.test("`parsePolicy()` names a bad rollback glob", () => {
  policyError(() => parsePolicy('rollback:\n  paths: ["/a/[b"]\n', "p.yaml"), {
    message: ['field "rollback.paths[0]": Bad glob "/a/[b": unclosed "["'],
    line: 2,
    column: 11,
    field: "rollback.paths[0]",
  });
});

// --- loadPolicy -----------------------------------------------------------------------------

Deno.test("`loadPolicy()` reports a missing file by name", async () => {
  const fs = memory({});
  const error = await policyErrorAsync(loadPolicy("missing.yaml", fs), {
    message: ['Cannot read policy "missing.yaml": no such file'],
    file: "missing.yaml",
  });
  assert.ok(error.cause instanceof Deno.errors.NotFound);
  assert.deepEqual(fs.reads, ["/p/missing.yaml"]);
});

Deno.test("`loadPolicy()` reports a missing parent by the name the child gave", async () => {
  const fs = memory({ "/p/child.yaml": "extends: ./gone.yaml\n" });
  await policyErrorAsync(loadPolicy("child.yaml", fs), {
    message: ['Cannot read policy "./gone.yaml": no such file'],
  });
});

Deno.test("`loadPolicy()` passes on other read errors' messages", async () => {
  await policyErrorAsync(
    loadPolicy("p.yaml", { cwd: "/p", readFile: () => Promise.reject(new Error("disk on fire")) }),
    { message: ['Cannot read policy "p.yaml": disk on fire'] },
  );
  await policyErrorAsync(
    loadPolicy("p.yaml", {
      cwd: "/p",
      readFile: () => Promise.reject(new Deno.errors.PermissionDenied("no")),
    }),
    { message: ['Cannot read policy "p.yaml": permission denied'] },
  );
});

Deno.test("`loadPolicy()` rejects an unknown template and lists the valid ones", async () => {
  const error = await policyErrorAsync(loadPolicy("coding_agent", memory({})), {
    message: ['Unknown policy template "coding_agent"', ...TEMPLATES, "or give a file path"],
    file: "coding_agent",
  });
  assert.match(error.message, /choose one of default, coding-agent, /);
});

Deno.test("`loadPolicy()` rejects an unknown template named in `extends`", async () => {
  await policyErrorAsync(loadPolicy("p.yaml", memory({ "/p/p.yaml": "extends: strikt\n" })), {
    message: ['Unknown policy template "strikt"', "strict"],
  });
});

Deno.test("`isTemplateName()` knows the built-in templates only", () => {
  for (const t of TEMPLATES) assert.ok(isTemplateName(t));
  assert.ok(!isTemplateName("none"));
  assert.ok(!isTemplateName("./default.yaml"));
});

Deno.test("`loadPolicy()` reports a parse error with the file as written", async () => {
  await policyErrorAsync(
    loadPolicy("conf/p.yaml", memory({ "/p/conf/p.yaml": "extends: none\nmod: x\n" })),
    { message: ['Invalid policy at conf/p.yaml:2:1: unknown key "mod"'], file: "conf/p.yaml" },
  );
});

Deno.test("`loadPolicy()` with `extends: none` resolves one layer with the engine defaults", async () => {
  const policy = await loadPolicy("p.yaml", memory({ "/p/p.yaml": "extends: none\n" }));
  assert.deepEqual(policy.sources, ["p.yaml"]);
  assert.equal(policy.name, "p.yaml");
  assert.equal(policy.description, "");
  assert.equal(policy.mode, "pause");
  assert.equal(policy.workspace, ".");
  assert.deepEqual(policy.thresholds, { alert: 30, pause: 60, rollback: 85, kill: 101 });
  assert.deepEqual(policy.limits, { cpu_percent: 90, cpu_seconds: 10, memory_mb: 2048 });
  assert.ok(Object.values(policy.monitors).every((on) => on));
  assert.deepEqual(policy.files.read, { default: "allow", allow: [], deny: [] });
  assert.deepEqual(policy.network, { default: "allow", allow: [], deny: [], listen: true });
  assert.deepEqual(policy.processes, { default: "allow", allow: [], deny: [] });
  assert.deepEqual(policy.database, { ports: DEFAULT_DB_PORTS, allow: [] });
  assert.deepEqual(policy.rules, []);
  assert.deepEqual(policy.rollback.paths, []);
  assert.ok(policy.rollback.exclude.includes("**/node_modules/**"));
});

Deno.test("`loadPolicy()` reads an absolute path as given, whatever the cwd", async () => {
  const fs = memory({ "/etc/sentry/p.yaml": "extends: none\nname: abs\n" });
  const policy = await loadPolicy("/etc/sentry/p.yaml", fs);
  assert.equal(policy.name, "abs");
  assert.deepEqual(fs.reads, ["/etc/sentry/p.yaml"]);
});

Deno.test("`loadPolicy()` resolves a relative `extends` from the extending file's folder", async () => {
  const fs = memory({
    "/p/team/agent.yaml": "extends: ../base/team.yaml\nname: agent\n",
    "/p/base/team.yaml": "extends: org/root.yaml\nmode: alert\n",
    "/p/base/org/root.yaml": "extends: none\nthresholds: { alert: 20 }\n",
  });
  const policy = await loadPolicy("team/agent.yaml", fs);
  assert.deepEqual(fs.reads, ["/p/team/agent.yaml", "/p/base/team.yaml", "/p/base/org/root.yaml"]);
  assert.deepEqual(policy.sources, ["org/root.yaml", "../base/team.yaml", "team/agent.yaml"]);
  assert.equal(policy.name, "agent");
  assert.equal(policy.mode, "alert");
  assert.equal(policy.thresholds.alert, 20);
});

Deno.test("`loadPolicy()` follows a chain where the same relative name means different files", async () => {
  // /p/a/b/x.yaml -> ../base.yaml (/p/a/base.yaml) -> ../base.yaml (/p/base.yaml): no cycle.
  const fs = memory({
    "/p/a/b/x.yaml": "extends: ../base.yaml\nname: x\n",
    "/p/a/base.yaml": "extends: ../base.yaml\nmode: alert\n",
    "/p/base.yaml": "extends: none\nmode: kill\nthresholds: { alert: 10 }\n",
  });
  const policy = await loadPolicy("a/b/x.yaml", fs);
  assert.deepEqual(fs.reads, ["/p/a/b/x.yaml", "/p/a/base.yaml", "/p/base.yaml"]);
  assert.equal(policy.mode, "alert");
  assert.equal(policy.thresholds.alert, 10);
});

Deno.test("`loadPolicy()` detects a cycle in `extends`", async () => {
  const fs = memory({
    "/p/a.yaml": "extends: sub/b.yaml\n",
    "/p/sub/b.yaml": "extends: ../a.yaml\n",
  });
  const error = await policyErrorAsync(loadPolicy("a.yaml", fs), {
    message: ['Cannot load policy "a.yaml": "extends" forms a cycle through "../a.yaml"'],
    field: "extends",
  });
  assert.equal(error.file, "../a.yaml");
});

Deno.test("`loadPolicy()` detects a policy that extends itself", async () => {
  await policyErrorAsync(
    loadPolicy("./self.yaml", memory({ "/p/self.yaml": "extends: ./self.yaml\n" })),
    { message: ['"extends" forms a cycle through "./self.yaml"'] },
  );
});

Deno.test("`loadPolicy()` merges layers: lists append, scalars override", async () => {
  const fs = memory({
    "/p/base.yaml": [
      "extends: none",
      "name: base",
      "description: The base",
      "mode: kill",
      "thresholds: { alert: 20, pause: 50 }",
      "limits: { memory_mb: 1024 }",
      "monitors: { cpu: false }",
      "files:",
      "  read: { deny: [~/.ssh/**, ~/.aws/**] }",
      "network: { deny: [169.254.169.254], listen: false }",
      "database: { ports: [5432], allow: [localhost:5432] }",
      "rollback: { paths: ['${WORKSPACE}/**'] }",
    ].join("\n"),
    "/p/child.yaml": [
      "extends: base.yaml",
      "name: child",
      "thresholds: { pause: 70 }",
      "monitors: { cpu: true }",
      "files:",
      "  read: { deny: [~/.ssh/**, ~/.kube/**] }",
      "network: { deny: [10.0.0.0/8] }",
      "database: { allow: ['db.internal:5432'] }",
    ].join("\n"),
  });
  const policy = await loadPolicy("child.yaml", fs);
  assert.equal(policy.name, "child");
  // A child's description is its own; an absent one is not inherited.
  assert.equal(policy.description, "");
  assert.equal(policy.mode, "kill");
  assert.deepEqual(policy.thresholds, { alert: 20, pause: 70, rollback: 85, kill: 101 });
  assert.equal(policy.limits.memory_mb, 1024);
  assert.equal(policy.monitors.cpu, true);
  // Appended, parent first, without duplicates.
  assert.deepEqual(policy.files.read.deny, ["~/.ssh/**", "~/.aws/**", "~/.kube/**"]);
  assert.deepEqual(policy.network.deny, ["169.254.169.254", "10.0.0.0/8"]);
  assert.equal(policy.network.listen, false);
  assert.deepEqual(policy.database.ports, [5432]);
  assert.deepEqual(policy.database.allow, ["localhost:5432", "db.internal:5432"]);
  assert.deepEqual(policy.rollback.paths, ["${WORKSPACE}/**"]);
});

Deno.test("`loadPolicy()` never lets a child remove a parent's deny", async () => {
  const fs = memory({
    "/p/base.yaml": "extends: none\nfiles: { read: { deny: [~/.ssh/**] } }\n",
    "/p/child.yaml": "extends: base.yaml\nfiles: { read: { deny: [], allow: [~/.ssh/**] } }\n",
  });
  const policy = await loadPolicy("child.yaml", fs);
  assert.deepEqual(policy.files.read.deny, ["~/.ssh/**"]);
  assert.deepEqual(policy.files.read.allow, ["~/.ssh/**"]);
});

Deno.test("`loadPolicy()` lets a rule with the same id replace an inherited one", async () => {
  const rule = (id: string, risk: number, extra = "") =>
    `  - { id: ${id}, description: Detect ${id}, risk: ${risk}, match: { kind: file.read }${extra} }`;
  const fs = memory({
    "/p/base.yaml": ["extends: none", "rules:", rule("a", 10), rule("b", 20)].join("\n"),
    "/p/child.yaml": ["extends: base.yaml", "rules:", rule("a", 90, ", enabled: false")].join(
      "\n",
    ),
  });
  const policy = await loadPolicy("child.yaml", fs);
  assert.deepEqual(
    policy.rules.map((r) => [r.id, r.risk, r.enabled]),
    [["b", 20, true], ["a", 90, false]],
  );
});

Deno.test("`loadPolicy()` infers `default: deny` for a section whose allow list is non-empty", async () => {
  const fs = memory({
    "/p/base.yaml": "extends: none\nfiles: { write: { deny: [/etc/**] } }\n",
    "/p/child.yaml": [
      "extends: base.yaml",
      "files: { write: { allow: ['${WORKSPACE}/**'] } }",
      "network: { allow: [api.github.com] }",
      "processes: { allow: [git] }",
    ].join("\n"),
  });
  const policy = await loadPolicy("child.yaml", fs);
  assert.equal(policy.files.write.default, "deny");
  assert.equal(policy.files.read.default, "allow");
  assert.equal(policy.files.delete.default, "allow");
  assert.equal(policy.network.default, "deny");
  assert.equal(policy.processes.default, "deny");
});

Deno.test("`loadPolicy()` keeps a section open with an explicit `default: allow`", async () => {
  const fs = memory({
    "/p/base.yaml": "extends: none\nnetwork: { default: allow }\n",
    "/p/child.yaml": [
      "extends: base.yaml",
      "network: { allow: [api.github.com] }",
      "files: { read: { default: allow, allow: ['/data/**'] } }",
    ].join("\n"),
  });
  const policy = await loadPolicy("child.yaml", fs);
  assert.equal(policy.network.default, "allow");
  assert.equal(policy.files.read.default, "allow");
});

Deno.test("`loadPolicy()` lets a child close a section its parent left open", async () => {
  const fs = memory({
    "/p/base.yaml": "extends: none\nnetwork: { default: allow, allow: [a.com] }\n",
    "/p/child.yaml": "extends: base.yaml\nnetwork: { default: deny }\n",
  });
  const policy = await loadPolicy("child.yaml", fs);
  assert.equal(policy.network.default, "deny");
  assert.deepEqual(policy.network.allow, ["a.com"]);
});

const DEFAULT_YAML = new URL("../../policies/default.yaml", import.meta.url);
const hasDefault = (() => {
  try {
    return Deno.statSync(DEFAULT_YAML).isFile;
  } catch {
    return false;
  }
})();

Deno.test({
  name: hasDefault
    ? "`loadPolicy()` makes a policy without `extends` extend the built-in `default`"
    : "`loadPolicy()` makes a policy without `extends` extend `default` (skipped: policies/default.yaml does not exist yet)",
  ignore: !hasDefault,
  fn: async () => {
    const fs = memory({ "/p/mine.yaml": "name: mine\nfiles: { read: { deny: [/secret/**] } }\n" });
    const policy = await loadPolicy("mine.yaml", fs);
    assert.deepEqual(policy.sources, ["default", "mine.yaml"]);
    assert.equal(policy.name, "mine");
    // The built-in template is read from disk, not through `readFile`.
    assert.deepEqual(fs.reads, ["/p/mine.yaml"]);
    const base = parsePolicy(await Deno.readTextFile(DEFAULT_YAML), "default");
    for (const glob of base.files?.read?.deny ?? []) {
      assert.ok(policy.files.read.deny.includes(glob), glob);
    }
    assert.equal(policy.files.read.deny.at(-1), "/secret/**");
  },
});

Deno.test("`parsePolicy()` names a control character's line and column", () => {
  policyError(() => parsePolicy("name: x\ndescription: a\x07b\n", "p.yaml"), {
    message: ["p.yaml:2:15: control character U+0007"],
    line: 2,
    column: 15,
  });
  // Tabs, line feeds and carriage returns are text.
  assert.equal(parsePolicy("name: x\r\ndescription: 'a\tb'\r\n", "p.yaml").name, "x");
});

Deno.test("`parsePolicy()` reports text that was not UTF-8 once per run of bad bytes", () => {
  const text = new TextDecoder().decode(
    new Uint8Array([...new TextEncoder().encode("name: x\nmode: "), 0xff, 0xfe, 0x0a]),
  );
  const error = policyError(() => parsePolicy(text, "p.yaml"), {
    message: ["p.yaml:2:7: the text is not valid UTF-8"],
    line: 2,
    column: 7,
  });
  assert.equal(error.problems.length, 1);
});

Deno.test("`parsePolicy()` refuses thresholds out of order, at the one that breaks it", () => {
  policyError(() => parsePolicy("thresholds:\n  alert: 90\n  pause: 10\n", "p.yaml"), {
    message: ['p.yaml:3:10: field "thresholds.pause": 10 is below thresholds.alert (90)'],
    line: 3,
    column: 10,
    field: "thresholds.pause",
  });
  policyError(() => parsePolicy("thresholds: { pause: 70, kill: 50 }\n", "p.yaml"), {
    message: ['field "thresholds.kill": 50 is below thresholds.pause (70)'],
    field: "thresholds.kill",
  });
  assert.ok(parsePolicy("thresholds: { alert: 20, pause: 20, kill: 101 }\n", "p.yaml"));
});

Deno.test("`loadPolicy()` refuses thresholds that fall out of order with what they extend", async () => {
  const error = await policyErrorAsync(
    loadPolicy("/p/child.yaml", {
      readFile: () => Promise.resolve("name: c\nthresholds:\n  alert: 70\n"),
    }),
    {
      message: [
        '/p/child.yaml:3:10: field "thresholds.alert": with what it extends, thresholds.pause (60) is below thresholds.alert (70)',
      ],
      field: "thresholds.alert",
    },
  );
  assert.equal(error.line, 3);
});

Deno.test("`parsePolicy()` refuses an unbalanced glob in a process list", () => {
  policyError(() => parsePolicy('processes:\n  deny: ["[abc"]\n', "p.yaml"), {
    message: ['p.yaml:2:10: field "processes.deny[0]": Bad glob "[abc": unclosed "["'],
    line: 2,
    column: 10,
  });
  policyError(() => parsePolicy("processes:\n  allow: [{ name: 'py{3' }]\n", "p.yaml"), {
    message: ['field "processes.allow[0]": Bad glob "py{3": unbalanced "{"'],
  });
});

Deno.test("`parsePolicy()` with an environment names an unset variable's line and column", () => {
  const yaml = "files:\n  read:\n    deny:\n      - ${NOPE}/x\n      - $ALSO_NOPE/y\n" +
    "      - ${SET}/z\n      - ${WORKSPACE}/w\n";
  const error = policyError(() => parsePolicy(yaml, "p.yaml", { env: { SET: "/s" } }), {
    message: [
      'p.yaml:4:9: field "files.read.deny[0]": unset variable "NOPE"',
      "(and 1 more problem)",
    ],
    line: 4,
    column: 9,
  });
  assert.match(error.problems[1]?.message ?? "", /p\.yaml:5:9: .*unset variable "ALSO_NOPE"/);
  // Without an environment, variables are left to compile time.
  assert.ok(parsePolicy(yaml, "p.yaml"));
  // In rules too.
  const rule = "rules:\n  - id: r\n    description: Detect r\n    risk: 1\n" +
    "    match: { kind: file.read, target: '${NOPE}/**' }\n";
  policyError(() => parsePolicy(rule, "p.yaml", { env: {} }), {
    message: ['field "rules[0].match.target": unset variable "NOPE"'],
    line: 5,
  });
});

Deno.test("`parsePolicy()` gathers every problem, in the order of the file", () => {
  const yaml = 'processes:\n  deny: ["[abc"]\nthresholds:\n  alert: 90\n  pause: 10\n' +
    "files:\n  read:\n    deny: ['${NOPE}/x']\n";
  const error = policyError(() => parsePolicy(yaml, "p.yaml", { env: {} }), {
    message: ["p.yaml:2:10", "(and 2 more problems)"],
  });
  assert.deepEqual(error.problems.map((p) => p.message.match(/p\.yaml:(\d+):/)?.[1]), [
    "2",
    "5",
    "8",
  ]);
});
