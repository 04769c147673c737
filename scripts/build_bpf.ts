/**
 * Rebuilds the eBPF objects in `src/platform/bpf/` from their C sources with clang, and strips
 * their DWARF (the BTF that CO-RE needs stays). Every `NAME.bpf.c` there builds to `NAME.bpf.o`
 * beside it: `sentry.bpf.c` (the tracing sensor) and `connect_guard.bpf.c` (the cgroup connect
 * guard). Needs clang and libbpf-dev (for `<bpf/bpf_helpers.h>`); users and the tests do not:
 * the built objects are committed.
 *
 *     deno task bpf                  rebuild every object in place
 *     deno task bpf connect_guard    rebuild only the named ones (`NAME` or `NAME.bpf.c`)
 *     deno task bpf --check          rebuild each into a temporary file and fail if one differs
 *
 * @module
 */

import { fileURLToPath } from "node:url";

/** The folder of the C sources, their header and the committed objects. */
export const BPF_DIR = fileURLToPath(new URL("../src/platform/bpf/", import.meta.url));

/** One C source and the object committed beside it. */
export interface BpfTarget {
  /** The source's file name, such as `sentry.bpf.c`. */
  source: string;
  /** The object's absolute path, such as `.../src/platform/bpf/sentry.bpf.o`. */
  object: string;
}

/**
 * Every `*.bpf.c` in {@link BPF_DIR} (or `dir`), sorted by name, with the object it builds to.
 * A new program joins the build and the check by being dropped there.
 */
export function bpfTargets(dir: string = BPF_DIR): BpfTarget[] {
  const base = dir.endsWith("/") ? dir : `${dir}/`;
  const sources: string[] = [];
  for (const entry of Deno.readDirSync(base)) {
    if (entry.isFile && entry.name.endsWith(".bpf.c")) sources.push(entry.name);
  }
  sources.sort();
  return sources.map((source) => ({ source, object: `${base}${source.slice(0, -2)}.o` }));
}

/**
 * The clang arguments that build one source (a file name in {@link BPF_DIR}) for x86_64 (CO-RE;
 * the target arch picks pt_regs).
 */
export function clangArgs(source: string, output: string): string[] {
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
    source,
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

/** Builds one source (a file name in {@link BPF_DIR}) into `output`. */
export async function buildBpf(source: string, output: string): Promise<void> {
  await run("clang", clangArgs(source, output));
  await run("llvm-strip", ["-g", output]);
}

/** Whether two byte arrays are equal. */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/**
 * Rebuilds every target into a temporary file and returns the objects that differ from (or are
 * missing beside) their source, as messages; empty when every committed object is fresh.
 */
export async function checkBpf(targets: readonly BpfTarget[] = bpfTargets()): Promise<string[]> {
  const stale: string[] = [];
  for (const target of targets) {
    const output = await Deno.makeTempFile({ suffix: ".bpf.o" });
    try {
      await buildBpf(target.source, output);
      let committed: Uint8Array;
      try {
        committed = await Deno.readFile(target.object);
      } catch {
        stale.push(`${target.object} is missing: run "deno task bpf" and commit it`);
        continue;
      }
      if (!sameBytes(await Deno.readFile(output), committed)) {
        stale.push(
          `${target.object} differs from a fresh build of ${target.source}: run "deno task bpf" and commit it`,
        );
      }
    } finally {
      await Deno.remove(output).catch(() => {});
    }
  }
  return stale;
}

/**
 * The targets named on the command line (`sentry` or `sentry.bpf.c`), or every target when none
 * is named. Throws a `RangeError` naming an argument that matches no source.
 */
export function selectTargets(args: readonly string[], targets: readonly BpfTarget[]): BpfTarget[] {
  const names = args.filter((a) => !a.startsWith("--"));
  if (names.length === 0) return [...targets];
  return names.map((name) => {
    const source = name.endsWith(".bpf.c") ? name : `${name}.bpf.c`;
    const target = targets.find((t) => t.source === source);
    if (target === undefined) {
      throw new RangeError(
        `No BPF source "${source}" in ${BPF_DIR}: the sources are ${
          targets.map((t) => t.source).join(", ")
        }`,
      );
    }
    return target;
  });
}

if (import.meta.main) {
  try {
    const targets = selectTargets(Deno.args, bpfTargets());
    if (Deno.args.includes("--check")) {
      const stale = await checkBpf(targets);
      // deno-lint-ignore no-console
      for (const line of stale) console.error(line);
      if (stale.length > 0) Deno.exit(1);
    } else {
      for (const target of targets) await buildBpf(target.source, target.object);
    }
  } catch (error) {
    // deno-lint-ignore no-console
    console.error((error as Error).message);
    Deno.exit(1);
  }
}
