import assert from "node:assert/strict";
import { BPF_DIR, bpfTargets, buildBpf, checkBpf, clangArgs, selectTargets } from "./build_bpf.ts";

function missingTool(): string | null {
  for (const tool of ["clang", "llvm-strip"]) {
    try {
      new Deno.Command(tool, { args: ["--version"], stdout: "null", stderr: "null" }).outputSync();
    } catch {
      return tool;
    }
  }
  try {
    Deno.statSync("/usr/include/bpf/bpf_helpers.h");
  } catch {
    return "libbpf-dev";
  }
  return null;
}

const missing = missingTool();
if (missing !== null) {
  // deno-lint-ignore no-console
  console.warn(`skipping the BPF object checks: ${missing} is not installed`);
}

Deno.test("`bpfTargets()` lists every *.bpf.c of the bpf folder with its object beside it", () => {
  const targets = bpfTargets();
  const sources = targets.map((t) => t.source);
  assert.ok(sources.includes("sentry.bpf.c"), sources.join(", "));
  assert.ok(sources.includes("connect_guard.bpf.c"), sources.join(", "));
  assert.deepEqual(sources, [...sources].sort());
  for (const t of targets) {
    assert.equal(t.object, `${BPF_DIR}${t.source.replace(/\.c$/, ".o")}`);
  }
});

Deno.test("`bpfTargets()` ignores headers and other files", () => {
  const dir = Deno.makeTempDirSync();
  try {
    for (const name of ["a.bpf.c", "b.bpf.c", "vmlinux_min.h", "a.bpf.o", "notes.c"]) {
      Deno.writeTextFileSync(`${dir}/${name}`, "");
    }
    Deno.mkdirSync(`${dir}/dir.bpf.c`);
    assert.deepEqual(bpfTargets(dir), [
      { source: "a.bpf.c", object: `${dir}/a.bpf.o` },
      { source: "b.bpf.c", object: `${dir}/b.bpf.o` },
    ]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("`clangArgs()` builds the named source, relative to the bpf folder", () => {
  const args = clangArgs("connect_guard.bpf.c", "/tmp/x.o");
  assert.equal(args[args.indexOf("-c") + 1], "connect_guard.bpf.c");
  assert.equal(args[args.indexOf("-o") + 1], "/tmp/x.o");
  assert.ok(args.includes("-fdebug-compilation-dir=."));
});

Deno.test("`selectTargets()` picks sources by name, every one by default, and rejects unknown names", () => {
  const targets = [
    { source: "a.bpf.c", object: "/x/a.bpf.o" },
    { source: "b.bpf.c", object: "/x/b.bpf.o" },
  ];
  assert.deepEqual(selectTargets([], targets), targets);
  assert.deepEqual(selectTargets(["--check"], targets), targets);
  assert.deepEqual(selectTargets(["b", "--check"], targets), [targets[1]]);
  assert.deepEqual(selectTargets(["a.bpf.c"], targets), [targets[0]]);
  assert.throws(
    () => selectTargets(["c"], targets),
    /No BPF source "c\.bpf\.c".*a\.bpf\.c, b\.bpf\.c/,
  );
});

for (const target of bpfTargets()) {
  Deno.test({
    name: `the committed ${
      target.source.replace(/\.c$/, ".o")
    } is what its C source builds to, byte for byte`,
    ignore: missing !== null,
    async fn() {
      const output = await Deno.makeTempFile({ suffix: ".bpf.o" });
      try {
        await buildBpf(target.source, output);
        const built = await Deno.readFile(output);
        const committed = await Deno.readFile(target.object);
        assert.ok(
          built.length === committed.length && built.every((b, i) => b === committed[i]),
          `${target.object} is stale: run "deno task bpf" and commit it`,
        );
      } finally {
        await Deno.remove(output);
      }
    },
  });
}

Deno.test({
  name: "`checkBpf()` names an object that differs from its source, and passes fresh ones",
  ignore: missing !== null,
  async fn() {
    const [first] = bpfTargets();
    assert.ok(first !== undefined);
    const fake = await Deno.makeTempFile({ suffix: ".bpf.o" });
    try {
      await Deno.writeFile(fake, new Uint8Array([0x7f, 0x45, 0x4c, 0x46]));
      const stale = await checkBpf([{ source: first.source, object: fake }]);
      assert.equal(stale.length, 1);
      assert.match(stale[0]!, /differs from a fresh build of/);
      await Deno.remove(fake);
      const missingObject = await checkBpf([{ source: first.source, object: fake }]);
      assert.match(missingObject[0]!, /is missing/);
    } finally {
      await Deno.remove(fake).catch(() => {});
    }
  },
});
