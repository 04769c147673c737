/**
 * Rebuilds the eBPF object `src/platform/bpf/sentry.bpf.o` from its C source with clang, and
 * strips its DWARF (the BTF that CO-RE needs stays). Needs clang and libbpf-dev (for
 * `<bpf/bpf_helpers.h>`); users and the tests do not: the built object is committed.
 *
 *     deno task bpf           rebuild the object in place
 *     deno task bpf --check   rebuild into a temporary file and fail if it differs
 *
 * @module
 */

import { fileURLToPath } from "node:url";

/** The C source, its header and the committed object. */
export const BPF_DIR = fileURLToPath(new URL("../src/platform/bpf/", import.meta.url));
export const BPF_SOURCE = `${BPF_DIR}sentry.bpf.c`;
export const BPF_OBJECT = `${BPF_DIR}sentry.bpf.o`;

/** The clang arguments that build the object for x86_64 (CO-RE; the target arch picks pt_regs). */
export function clangArgs(output: string): string[] {
  return [
    "-O2",
    "-g",
    "-target",
    "bpf",
    "-D__TARGET_ARCH_x86",
    // Paths relative to the source's folder, and no compile directory in the debug info: the
    // object is then the same byte for byte wherever the repository is cloned.
    "-fdebug-compilation-dir=.",
    "-I",
    ".",
    "-c",
    "sentry.bpf.c",
    "-o",
    output,
  ];
}

async function run(cmd: string, args: string[]): Promise<void> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cmd, { args, cwd: BPF_DIR, stdout: "piped", stderr: "piped" })
      .output();
  } catch (error) {
    throw new Error(`Cannot run "${cmd}": ${(error as Error).message} (install clang and llvm)`);
  }
  if (!out.success) {
    throw new Error(`"${cmd}" failed:\n${new TextDecoder().decode(out.stderr)}`);
  }
}

/** Builds the object into `output`. */
export async function buildBpf(output: string): Promise<void> {
  await run("clang", clangArgs(output));
  await run("llvm-strip", ["-g", output]);
}

if (import.meta.main) {
  const check = Deno.args.includes("--check");
  const output = check ? await Deno.makeTempFile({ suffix: ".bpf.o" }) : BPF_OBJECT;
  try {
    await buildBpf(output);
    if (check) {
      const built = await Deno.readFile(output);
      const committed = await Deno.readFile(BPF_OBJECT);
      const same = built.length === committed.length && built.every((b, i) => b === committed[i]);
      if (!same) {
        // deno-lint-ignore no-console
        console.error(
          `${BPF_OBJECT} differs from a fresh build of its source: run "deno task bpf" and commit it`,
        );
        Deno.exit(1);
      }
    }
  } catch (error) {
    // deno-lint-ignore no-console
    console.error((error as Error).message);
    Deno.exit(1);
  } finally {
    if (check) await Deno.remove(output).catch(() => {});
  }
}
