import assert from "node:assert/strict";
import { BPF_OBJECT, buildBpf } from "./build_bpf.ts";

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
  console.warn(`skipping the BPF object check: ${missing} is not installed`);
}

Deno.test({
  name: "the committed sentry.bpf.o is what its C source builds to, byte for byte",
  ignore: missing !== null,
  async fn() {
    const output = await Deno.makeTempFile({ suffix: ".bpf.o" });
    try {
      await buildBpf(output);
      const built = await Deno.readFile(output);
      const committed = await Deno.readFile(BPF_OBJECT);
      assert.ok(
        built.length === committed.length && built.every((b, i) => b === committed[i]),
        `${BPF_OBJECT} is stale: run "deno task bpf" and commit it`,
      );
    } finally {
      await Deno.remove(output);
    }
  },
});
