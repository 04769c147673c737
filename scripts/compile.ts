/**
 * Builds standalone Sentry binaries with `deno compile`, one per target, into `dist/`.
 *
 * Usage: `deno task compile [--target T ...] [--host]`
 *
 * `deno compile` needs the Deno runtime ("denort") for each target. It downloads it from
 * dl.deno.land unless `DENORT_BIN` names a local one. A denort binary serves exactly one target, so
 * with `DENORT_BIN` set only that target is built. When no runtime can be had, the script exits 1
 * with one line that gives the reason and the fix. `SENTRY_DEBUG=1` shows deno's own output.
 *
 * The logic that needs no I/O (targets, arguments, output names, error classification, runtime
 * sniffing) is exported so that `compile_test.ts` can test it directly.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { existsSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { stripVTControlCharacters } from "node:util";

/** The targets that Sentry ships binaries for, in build order. */
export const TARGETS = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
  "x86_64-pc-windows-msvc",
] as const;

/** One of {@link TARGETS}: a Rust-style target triple that `deno compile --target` accepts. */
export type Target = typeof TARGETS[number];

/** Where the binaries go, relative to the project root. */
export const DIST_DIR = "dist";

/** Directory of policies read at run time; it must be embedded in every binary. */
export const POLICIES_DIR = "policies";

/** Dashboard assets, embedded only when the directory exists. */
export const ASSETS_DIR = "src/api/assets";

/**
 * Files of the kernel sensing tiers read at run time: the eBPF object (and, in an x86_64 Linux
 * build, the libbpf, libelf and libz it needs, staged into `bpf/lib/`), and the seccomp
 * supervisor's worker, which runs as a Worker from its own module.
 */
export const KERNEL_INCLUDES = ["src/platform/bpf", "src/sensors/seccomp_worker.ts"] as const;

/** Where the native libraries are staged for embedding, relative to the project root. */
export const NATIVE_LIB_DIR = "src/platform/bpf/lib";

/** The libraries the eBPF tier loads, in dependency order, and the target they are built for. */
export const NATIVE_LIBS = ["libz.so.1", "libelf.so.1", "libbpf.so.1"] as const;

/** The entry point that is compiled. */
export const ENTRY = "main.ts";

/** A usage or validation error: the script prints its message as one line and exits 2. */
export class UsageError extends Error {
  /** Creates a usage error with a one-line message. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "UsageError";
  }
}

/** Returns whether `value` is one of {@link TARGETS}, narrowing its type. */
export function isTarget(value: string): value is Target {
  return (TARGETS as readonly string[]).includes(value);
}

/** Arguments of the compile script after parsing. */
export interface CompileArgs {
  /** Targets named with `--target`, in the order given, without duplicates. */
  targets: Target[];
  /** Whether `--host` was given. */
  host: boolean;
  /** Whether `--help` or `-h` was given. */
  help: boolean;
}

/** The usage text printed by `--help`. */
export const USAGE = [
  "Usage: deno task compile [--target TARGET ...] [--host]",
  "",
  "Builds dist/sentry-<target> (dist/sentry-<target>.exe for Windows) with deno compile.",
  "  --target TARGET  build this target; repeat for several (default: all)",
  "  --host           build only the target of this machine",
  "  -h, --help       show this help",
  "",
  `Targets: ${TARGETS.join(", ")}`,
  "Environment: DENORT_BIN=<path to a denort binary> builds without downloading the runtime;",
  "             SENTRY_DEBUG=1 shows deno compile's own output.",
].join("\n");

/**
 * Parses the script's arguments. Accepts `--target T`, `--target=T`, `--host` and `--help`.
 *
 * @throws {UsageError} on an unknown option, a missing or unknown target, or `--host` together
 * with `--target`.
 */
export function parseCompileArgs(args: readonly string[]): CompileArgs {
  const result: CompileArgs = { targets: [], host: false, help: false };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? "";
    let value: string | undefined;
    if (arg === "--help" || arg === "-h") {
      result.help = true;
      continue;
    } else if (arg === "--host") {
      result.host = true;
      continue;
    } else if (arg === "--target") {
      value = args[++i];
      if (value === undefined || value.startsWith("-")) {
        throw new UsageError(`Option "--target" needs a value: one of ${TARGETS.join(", ")}`);
      }
    } else if (arg.startsWith("--target=")) {
      value = arg.slice("--target=".length);
    } else {
      throw new UsageError(`Unknown argument "${arg}": run with --help for usage`);
    }
    if (!isTarget(value)) {
      throw new UsageError(`Unknown target "${value}": expected one of ${TARGETS.join(", ")}`);
    }
    if (!result.targets.includes(value)) result.targets.push(value);
  }
  if (result.host && result.targets.length > 0) {
    throw new UsageError(`Cannot combine "--host" with "--target": use one or the other`);
  }
  return result;
}

/**
 * Returns the targets that the arguments ask for: the named ones, the host's for `--host`, or
 * all of them.
 *
 * @throws {UsageError} when `--host` is given and the host is not a supported target.
 */
export function requestedTargets(args: CompileArgs, hostTarget: string): Target[] {
  if (args.host) {
    if (!isTarget(hostTarget)) {
      throw new UsageError(
        `Unsupported host target "${hostTarget}": pass --target with one of ${TARGETS.join(", ")}`,
      );
    }
    return [hostTarget];
  }
  return args.targets.length > 0 ? [...args.targets] : [...TARGETS];
}

/** Returns the output path of a target's binary, relative to the project root. */
export function outputPath(target: Target): string {
  const suffix = target.includes("windows") ? ".exe" : "";
  return `${DIST_DIR}/sentry-${target}${suffix}`;
}

/** Options for {@link compileArgs}. */
export interface CompileArgsOptions {
  /** Whether {@link ASSETS_DIR} exists and should be embedded. */
  includeAssets: boolean;
  /** Where to write the binary; defaults to {@link outputPath}. */
  output?: string;
}

/** Returns the arguments of `deno` (after the executable) that build one target. */
export function compileArgs(target: Target, options: CompileArgsOptions): string[] {
  const includes = ["--include", POLICIES_DIR];
  if (options.includeAssets) includes.push("--include", ASSETS_DIR);
  for (const path of KERNEL_INCLUDES) includes.push("--include", path);
  const output = options.output ?? outputPath(target);
  return ["compile", "-A", ...includes, "--target", target, "-o", output, ENTRY];
}

/**
 * Tells whether `--version` output is the full deno CLI's (`deno 2.9.6 (stable, ...)`, then
 * `v8 ...` and `typescript ...`). A denort runtime has no CLI: it runs the app it carries, and
 * with none it prints no such thing. A binary compiled on a full deno behaves like deno too,
 * which is how a build on the wrong runtime shows.
 */
export function isDenoVersionOutput(stdout: string): boolean {
  return /^deno \d+\.\d+\.\d+\b/m.test(stdout) && /^v8 \d/m.test(stdout);
}

/**
 * Text only the full deno CLI holds: the help of its `compile` subcommand. denort has no
 * argument parser, so this is how a runtime for another target (which cannot be run here to
 * ask) is told apart from a full deno.
 */
export const FULL_DENO_MARKER = "Compile the script into a self contained executable";

/** Whether an executable's bytes hold {@link FULL_DENO_MARKER}: a full deno, not denort. */
export function hasFullDenoMarker(bytes: Uint8Array): boolean {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).includes(FULL_DENO_MARKER);
}

/** The one-line message for a `DENORT_BIN` that is a full deno, not a denort runtime. */
export function notDenortMessage(denortBin: string, target: string): string {
  return `DENORT_BIN "${denortBin}" is a full deno, not a denort runtime: a binary built on it ` +
    `would run deno and ignore Sentry; set DENORT_BIN to the denort binary inside ` +
    `denort-${target}.zip (of this deno's version, ${Deno.version.deno}) or unset it`;
}

/**
 * Compares the built binary's `--version` with the app's (the same entry point run from source).
 * Returns null when they agree, else why not, in words for the one-line error.
 */
export function checkBuiltVersion(
  built: { code: number; stdout: string },
  expected: string,
): string | null {
  const first = built.stdout.trim().split("\n")[0] ?? "";
  if (isDenoVersionOutput(built.stdout)) {
    return `the binary runs deno, not the app (its --version printed "${first}"): ` +
      `the runtime is a full deno, not denort`;
  }
  if (built.code !== 0 || first !== expected) {
    return `the binary's --version printed "${first.slice(0, 80)}" (exit ${built.code}), ` +
      `not the app's "${expected}"`;
  }
  return null;
}

/**
 * Copies the host's libbpf, libelf and libz into {@link NATIVE_LIB_DIR}, so that an x86_64
 * Linux binary carries them and its eBPF tier runs on a host that has nothing but libc.
 * Returns the libraries it could not find (the binary then needs them on the host).
 */
export function stageNativeLibs(root: string, dirs: readonly string[] = LIB_DIRS): string[] {
  const into = join(root, NATIVE_LIB_DIR);
  Deno.mkdirSync(into, { recursive: true });
  const missing: string[] = [];
  for (const name of NATIVE_LIBS) {
    const from = dirs.map((d) => join(d, name)).find((p) => existsSync(p));
    if (from === undefined) {
      missing.push(name);
      continue;
    }
    // The real file, not the symlink: Deno.copyFileSync follows it.
    Deno.copyFileSync(from, join(into, name));
  }
  return missing;
}

/** Where Debian keeps x86_64 libraries. */
const LIB_DIRS = ["/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu"] as const;

/** Removes the staged libraries, so that no other target's binary carries them. */
export function unstageNativeLibs(root: string): void {
  try {
    Deno.removeSync(join(root, NATIVE_LIB_DIR), { recursive: true });
  } catch {
    // Never staged.
  }
}

/** Why a `deno compile` run failed. */
export type CompileFailureKind =
  /** The runtime could not be downloaded (no network, DNS, proxy, HTTP error). */
  | "runtime_download"
  /** `DENORT_BIN` names a file that cannot be read. */
  | "runtime_missing"
  /** Anything else, such as a type error in the project. */
  | "other";

/** A classified `deno compile` failure. */
export interface CompileFailure {
  /** The class of failure. */
  kind: CompileFailureKind;
  /** The most telling line of deno's output, without colours, for the one-line message. */
  detail: string;
  /** The host the runtime was to be downloaded from, when deno named it. */
  downloadHost?: string;
}

const DOWNLOAD_PATTERNS = [
  /error sending request/i,
  /dns error/i,
  /failed to lookup address/i,
  /connection refused/i,
  /connection reset/i,
  /timed out/i,
  /tcp connect error/i,
  /client error \(connect\)/i,
  /network is unreachable/i,
  /download(?:ing)? .*failed/i,
  /failed to download/i,
  /bad http status/i,
];

/**
 * Classifies `deno compile`'s stderr: a runtime that could not be downloaded, a `DENORT_BIN` that
 * cannot be read, or something else. Pure, so it can be tested on captured output.
 */
export function classifyCompileError(stderr: string): CompileFailure {
  const text = stripVTControlCharacters(stderr);
  const lines = text.split(/\r?\n/).map((line) => line.trim()).filter((line) => line !== "");
  const errorLine = lines.find((line) => line.startsWith("error:"));
  const firstCause = lines.find((line) => /^\d+: /.test(line) && !/^0: /.test(line));
  const missing = text.match(/Could not find denort at '([^']*)'/);
  if (missing) {
    return { kind: "runtime_missing", detail: `cannot read denort at "${missing[1]}"` };
  }
  const url = text.match(/https?:\/\/([^/\s)]+)\/\S*denort-[\w-]+\.zip/);
  const isDownload = DOWNLOAD_PATTERNS.some((pattern) => pattern.test(text)) &&
    (url !== null || /denort|base binary/i.test(text));
  if (isDownload) {
    const failure: CompileFailure = {
      kind: "runtime_download",
      detail: (firstCause ?? errorLine ?? "download failed").replace(/^\d+: /, ""),
    };
    if (url?.[1] !== undefined) failure.downloadHost = url[1];
    return failure;
  }
  const detail = (errorLine ?? lines.at(-1) ?? "deno compile failed without output")
    .replace(/^error:\s*/, "");
  return { kind: "other", detail };
}

/** Options for {@link failureMessage}. */
export interface FailureMessageOptions {
  /** The target whose build failed. */
  target: Target;
  /** The Deno version, which is also the version of the runtime that deno compile wants. */
  denoVersion: string;
}

/** Returns the one-line message for a failed build: what failed, why, and how to fix it. */
export function failureMessage(failure: CompileFailure, options: FailureMessageOptions): string {
  const { target, denoVersion } = options;
  const prefix = `Cannot build "${outputPath(target)}"`;
  switch (failure.kind) {
    case "runtime_download":
      return `${prefix}: the Deno runtime (denort ${denoVersion}) cannot be downloaded from ` +
        `${failure.downloadHost ?? "dl.deno.land"}; set DENORT_BIN to a local ` +
        `denort-${target} binary (from https://github.com/denoland/deno/releases) and run again`;
    case "runtime_missing":
      return `${prefix}: ${failure.detail}; set DENORT_BIN to an existing denort-${target} ` +
        `binary or unset it`;
    case "other":
      return `${prefix}: deno compile failed: ${failure.detail}; run with SENTRY_DEBUG=1 for details`;
  }
}

/**
 * Returns whether bytes start a zip archive. The releases ship denort zipped, so pointing
 * `DENORT_BIN` at the zip is an easy mistake, and deno compile would then emit a broken binary.
 */
export function isZip(bytes: Uint8Array): boolean {
  return bytes[0] === 0x50 && bytes[1] === 0x4b && bytes[2] === 0x03 && bytes[3] === 0x04;
}

/**
 * Returns the target a denort binary was built for, read from its executable header (ELF,
 * Mach-O or PE), or undefined when the header is not recognised. Pure over the file's first bytes
 * (4 KiB is plenty).
 */
export function sniffRuntimeTarget(bytes: Uint8Array): string | undefined {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u8 = (at: number) => at < bytes.length ? view.getUint8(at) : -1;
  const u16 = (at: number) => at + 2 <= bytes.length ? view.getUint16(at, true) : -1;
  const u32 = (at: number) => at + 4 <= bytes.length ? view.getUint32(at, true) : -1;
  if (u32(0) === 0x464c457f) {
    // ELF; e_machine is at offset 18 (little-endian on every target we ship).
    const machine = u16(18);
    if (machine === 0x3e) return "x86_64-unknown-linux-gnu";
    if (machine === 0xb7) return "aarch64-unknown-linux-gnu";
    return undefined;
  }
  if (u32(0) === 0xfeedfacf) {
    // 64-bit Mach-O; cputype follows the magic.
    const cpu = u32(4);
    if (cpu === 0x01000007) return "x86_64-apple-darwin";
    if (cpu === 0x0100000c) return "aarch64-apple-darwin";
    return undefined;
  }
  if (u8(0) === 0x4d && u8(1) === 0x5a) {
    // PE: e_lfanew at 0x3c points at "PE\0\0", followed by the machine type.
    const peOffset = u32(0x3c);
    if (peOffset >= 0 && u32(peOffset) === 0x00004550) {
      const machine = u16(peOffset + 4);
      if (machine === 0x8664) return "x86_64-pc-windows-msvc";
      if (machine === 0xaa64) return "aarch64-pc-windows-msvc";
    }
    return undefined;
  }
  return undefined;
}

/** Options for {@link planTargets}. */
export interface PlanOptions {
  /** The host's target triple (`Deno.build.target`). */
  hostTarget: string;
  /** The value of `DENORT_BIN`, when set. */
  denortBin?: string | undefined;
  /** The target sniffed from the `DENORT_BIN` file's header, when recognised. */
  runtimeTarget?: string | undefined;
  /** Whether the targets were named explicitly with `--target`. */
  explicit: boolean;
}

/** Which targets to build, and a note to print about the choice. */
export interface TargetPlan {
  /** The targets to build, in order. */
  targets: Target[];
  /** Requested targets that will not be built. */
  skipped: Target[];
  /** A one-line note explaining the choice, when there is something to say. */
  note?: string;
}

/**
 * Decides which of the requested targets to build. Without `DENORT_BIN`, all of them. With it,
 * only the one target the runtime serves: the target in its header when recognised, else the one
 * `--target`, else the host's.
 *
 * @throws {UsageError} when the runtime cannot serve any requested target.
 */
export function planTargets(requested: readonly Target[], options: PlanOptions): TargetPlan {
  const { denortBin, runtimeTarget, hostTarget, explicit } = options;
  if (denortBin === undefined) return { targets: [...requested], skipped: [] };
  const single = explicit && requested.length === 1 ? requested[0] : undefined;
  if (single !== undefined && runtimeTarget !== undefined && runtimeTarget !== single) {
    throw new UsageError(
      `DENORT_BIN "${denortBin}" is a runtime for "${runtimeTarget}", not "${single}": ` +
        `set DENORT_BIN to a denort-${single} binary or pass --target ${runtimeTarget}`,
    );
  }
  const serves = runtimeTarget ?? single ?? hostTarget;
  if (!isTarget(serves) || !requested.includes(serves)) {
    throw new UsageError(
      `DENORT_BIN "${denortBin}" serves only "${serves}", which is not among the requested ` +
        `targets: pass --target with the runtime's target or unset DENORT_BIN`,
    );
  }
  const skipped = requested.filter((target) => target !== serves);
  const how = runtimeTarget !== undefined ? "per its header" : single ? "per --target" : "host";
  let note = `DENORT_BIN is set: building only ${serves} (a denort runtime serves one target; ` +
    `${how})`;
  if (skipped.length > 0) note += `; skipping ${skipped.join(", ")}`;
  return { targets: [serves], skipped, note };
}

/** Options for {@link cachedRuntimePath}. */
export interface CachedRuntimeOptions {
  /** Deno's cache directory (`DENO_DIR`, or `denoDir` from `deno info --json`). */
  denoDir: string;
  /** The Deno version whose runtime is wanted. */
  denoVersion: string;
}

/**
 * Returns where `deno compile` caches a downloaded runtime for a target. If this file exists,
 * deno compile needs no network for that target.
 */
export function cachedRuntimePath(target: string, options: CachedRuntimeOptions): string {
  return join(options.denoDir, "dl", "release", `v${options.denoVersion}`, `denort-${target}.zip`);
}

/** Options for {@link summaryLine}. */
export interface SummaryOptions {
  /** The targets that were built. */
  built: readonly Target[];
  /** The targets that were not built. */
  notBuilt: readonly Target[];
}

/** Returns the closing summary: how many targets were built, which, and which were not. */
export function summaryLine(options: SummaryOptions): string {
  const { built, notBuilt } = options;
  const total = built.length + notBuilt.length;
  let line = `Built ${built.length} of ${total} target${total === 1 ? "" : "s"}`;
  if (built.length > 0) line += `: ${built.map(outputPath).join(", ")}`;
  if (notBuilt.length > 0) line += `; not built: ${notBuilt.join(", ")}`;
  return line;
}

// ---------------------------------------------------------------------------------------------
// I/O below: everything above is pure.

const encoder = new TextEncoder();

function writeLine(stream: { writeSync(p: Uint8Array): number }, line: string): void {
  let bytes = encoder.encode(`${line}\n`);
  while (bytes.length > 0) bytes = bytes.subarray(stream.writeSync(bytes));
}

function debugEnabled(): boolean {
  return Deno.env.get("SENTRY_DEBUG") === "1";
}

/**
 * Returns Deno's cache directory: `DENO_DIR` when set, else what `deno info --json` reports, or
 * undefined when neither is known.
 */
export async function denoDir(): Promise<string | undefined> {
  const fromEnv = Deno.env.get("DENO_DIR");
  if (fromEnv) return fromEnv;
  try {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json"],
      stdout: "piped",
      stderr: "null",
      env: { NO_COLOR: "1" },
      signal: AbortSignal.timeout(30_000),
    }).output();
    if (!output.success) return undefined;
    const info: unknown = JSON.parse(new TextDecoder().decode(output.stdout));
    if (typeof info === "object" && info !== null && "denoDir" in info) {
      return typeof info.denoDir === "string" ? info.denoDir : undefined;
    }
  } catch {
    // No cache dir known: callers treat that as "nothing cached".
  }
  return undefined;
}

/** Runs a program and returns its exit code and stdout; a program that cannot start gives -1. */
async function runFor(
  program: string,
  options: { args: string[]; cwd?: string },
): Promise<{ code: number; stdout: string }> {
  try {
    const output = await new Deno.Command(program, {
      args: options.args,
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
      stdin: "null",
      stdout: "piped",
      stderr: "null",
      env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
      clearEnv: false,
      signal: AbortSignal.timeout(60_000),
    }).output();
    return { code: output.code, stdout: new TextDecoder().decode(output.stdout) };
  } catch {
    return { code: -1, stdout: "" };
  }
}

/**
 * Whether `DENORT_BIN` is a full deno rather than denort. A runtime for this host is asked
 * (`--version`), and its behaviour decides; one for another target is searched for the CLI's
 * help text ({@link FULL_DENO_MARKER}).
 */
async function isFullDeno(path: string, runnable: boolean): Promise<boolean> {
  if (runnable) return isDenoVersionOutput((await runFor(path, { args: ["--version"] })).stdout);
  return hasFullDenoMarker(await Deno.readFile(path));
}

function readHead(path: string): Uint8Array {
  const file = Deno.openSync(path, { read: true });
  try {
    const buffer = new Uint8Array(4096);
    const read = file.readSync(buffer) ?? 0;
    return buffer.subarray(0, read);
  } finally {
    file.close();
  }
}

function removeQuietly(path: string): void {
  try {
    Deno.removeSync(path);
  } catch {
    // Not there.
  }
}

/**
 * The first line the app's entry point prints for `--version` when run from source, or null
 * when it prints nothing (then the built binary is not checked).
 */
async function appVersion(root: string): Promise<string | null> {
  const source = await runFor(Deno.execPath(), {
    args: ["run", "-A", "--no-check", ENTRY, "--version"],
    cwd: root,
  });
  const first = source.stdout.trim().split("\n")[0] ?? "";
  if (source.code !== 0 || first === "") {
    writeLine(
      Deno.stderr,
      `warning: "${ENTRY} --version" printed nothing: the binary is not checked`,
    );
    return null;
  }
  return first;
}

/**
 * Runs the compile script with its arguments and returns the exit code: 0 when every planned
 * target was built, 1 when a build failed, 2 for a usage error.
 */
export async function main(args: readonly string[]): Promise<number> {
  const root = dirname(dirname(fileURLToPath(import.meta.url)));
  const hostTarget = Deno.build.target;
  const denoVersion = Deno.version.deno;
  let plan: TargetPlan;
  try {
    const parsed = parseCompileArgs(args);
    if (parsed.help) {
      writeLine(Deno.stdout, USAGE);
      return 0;
    }
    const requested = requestedTargets(parsed, hostTarget);
    const denortBin = Deno.env.get("DENORT_BIN") || undefined;
    let runtimeTarget: string | undefined;
    if (denortBin !== undefined) {
      if (!existsSync(denortBin) || !statSync(denortBin).isFile()) {
        throw new UsageError(
          `DENORT_BIN names "${denortBin}", which does not exist: ` +
            `set it to a local denort binary or unset it`,
        );
      }
      const head = readHead(denortBin);
      if (isZip(head)) {
        throw new UsageError(
          `DENORT_BIN names "${denortBin}", which is a zip archive: ` +
            `unzip it and set DENORT_BIN to the denort binary inside`,
        );
      }
      runtimeTarget = sniffRuntimeTarget(head);
      const serves = runtimeTarget ?? hostTarget;
      if (await isFullDeno(denortBin, serves === hostTarget)) {
        throw new UsageError(notDenortMessage(denortBin, serves));
      }
    }
    plan = planTargets(requested, {
      hostTarget,
      denortBin,
      runtimeTarget,
      explicit: parsed.targets.length > 0,
    });
  } catch (error) {
    if (error instanceof UsageError) {
      writeLine(Deno.stderr, error.message);
      return 2;
    }
    throw error;
  }

  for (const required of [ENTRY, POLICIES_DIR]) {
    if (!existsSync(join(root, required))) {
      writeLine(Deno.stderr, `Cannot build: "${required}" does not exist in "${root}"`);
      writeLine(Deno.stdout, summaryLine({ built: [], notBuilt: plan.targets }));
      return 1;
    }
  }
  if (plan.note) writeLine(Deno.stdout, plan.note);
  const includeAssets = existsSync(join(root, ASSETS_DIR));
  Deno.mkdirSync(join(root, DIST_DIR), { recursive: true });

  // Stop a running deno compile on Ctrl-C or SIGTERM, rather than leave it orphaned.
  const controller = new AbortController();
  const stop = () => controller.abort();
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  for (const signal of signals) Deno.addSignalListener(signal, stop);

  const built: Target[] = [];
  /** The app's own `--version`, from source: what a binary for this host must print. */
  let expectedVersion: string | null | undefined;
  try {
    for (const [index, target] of plan.targets.entries()) {
      // A binary for this host is built beside its place, run, and moved in only if it runs the
      // app: a wrong runtime never leaves a binary that looks built.
      const runnable = target === hostTarget;
      const final = outputPath(target);
      const staging = runnable ? `${DIST_DIR}/.sentry-${target}.building` : final;
      const command = compileArgs(target, { includeAssets, output: staging });
      writeLine(Deno.stdout, `Building ${outputPath(target)}`);
      unstageNativeLibs(root);
      if (target === "x86_64-unknown-linux-gnu") {
        const missing = stageNativeLibs(root);
        if (missing.length > 0) {
          writeLine(
            Deno.stderr,
            `warning: ${
              missing.join(", ")
            } not found on this host: the binary's eBPF tier will need them on its host`,
          );
        }
      }
      if (debugEnabled()) writeLine(Deno.stderr, `$ ${Deno.execPath()} ${command.join(" ")}`);
      const output = await new Deno.Command(Deno.execPath(), {
        args: command,
        cwd: root,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        env: { NO_COLOR: "1" },
        signal: controller.signal,
      }).output();
      const stderr = new TextDecoder().decode(output.stderr);
      if (debugEnabled()) {
        Deno.stderr.writeSync(output.stdout);
        Deno.stderr.writeSync(output.stderr);
      }
      if (controller.signal.aborted) {
        writeLine(Deno.stderr, `Cannot build "${outputPath(target)}": interrupted`);
        writeLine(Deno.stdout, summaryLine({ built, notBuilt: plan.targets.slice(index) }));
        return 130;
      }
      if (!output.success) {
        // Later targets would fail the same way (same network, same code), so stop at the first.
        const failure = classifyCompileError(stderr);
        writeLine(Deno.stderr, failureMessage(failure, { target, denoVersion }));
        writeLine(Deno.stdout, summaryLine({ built, notBuilt: plan.targets.slice(index) }));
        return 1;
      }
      if (runnable) {
        expectedVersion ??= await appVersion(root);
        const problem = expectedVersion === null ? null : checkBuiltVersion(
          await runFor(join(root, staging), { args: ["--version"] }),
          expectedVersion,
        );
        if (problem !== null) {
          removeQuietly(join(root, staging));
          const runtime = Deno.env.get("DENORT_BIN");
          writeLine(
            Deno.stderr,
            `Cannot build "${final}": ${problem}; ${
              runtime
                ? `set DENORT_BIN (now "${runtime}") to a denort binary or unset it`
                : "run with SENTRY_DEBUG=1 for details"
            }`,
          );
          writeLine(Deno.stdout, summaryLine({ built, notBuilt: plan.targets.slice(index) }));
          return 1;
        }
        Deno.renameSync(join(root, staging), join(root, final));
      }
      built.push(target);
    }
  } finally {
    for (const target of plan.targets) {
      removeQuietly(join(root, DIST_DIR, `.sentry-${target}.building`));
    }
    unstageNativeLibs(root);
    for (const signal of signals) Deno.removeSignalListener(signal, stop);
  }
  writeLine(Deno.stdout, summaryLine({ built, notBuilt: [] }));
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (error) {
    if (debugEnabled()) throw error;
    const message = error instanceof Error ? error.message : String(error);
    writeLine(
      Deno.stderr,
      `Cannot build: ${message.split("\n")[0]}; run with SENTRY_DEBUG=1 for details`,
    );
    Deno.exit(1);
  }
}
