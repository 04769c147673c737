import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  cachedRuntimePath,
  classifyCompileError,
  compileArgs,
  denoDir,
  failureMessage,
  isTarget,
  isZip,
  outputPath,
  parseCompileArgs,
  planTargets,
  requestedTargets,
  sniffRuntimeTarget,
  summaryLine,
  type Target,
  TARGETS,
  UsageError,
} from "./compile.ts";

// Captured from `deno compile --target x86_64-unknown-linux-gnu` with dl.deno.land unreachable.
const DOWNLOAD_FAILURE = [
  "\x1b[0m\x1b[32mCheck\x1b[0m main.ts",
  "\x1b[0m\x1b[32mCompile\x1b[0m main.ts to dist/sentry-x86_64-unknown-linux-gnu",
  "\x1b[0m\x1b[32mDownload\x1b[0m https://dl.deno.land/release/v2.9.6/denort-x86_64-unknown-linux-gnu.zip",
  "\x1b[0m\x1b[1m\x1b[31merror\x1b[0m: Writing deno compile executable to temporary file 'out.tmp-2e15'",
  "",
  "Caused by:",
  "    0: Setting up base binary.",
  "    1: error sending request for url (https://dl.deno.land/release/v2.9.6/denort-x86_64-unknown-linux-gnu.zip): client error (Connect): dns error: failed to lookup address information: Name or service not known",
  "    2: client error (Connect)",
  "    3: dns error",
  "    4: failed to lookup address information: Name or service not known",
  "",
  "Stack backtrace:",
  "   0: <unknown>",
].join("\n");

// Captured from `DENORT_BIN=/nonexistent deno compile`.
const MISSING_DENORT = [
  "Compile main.ts to out3",
  "error: Writing deno compile executable to temporary file 'out3.tmp-6c80'",
  "",
  "Caused by:",
  "    0: Could not find denort at '/nonexistent'",
  "    1: No such file or directory (os error 2)",
].join("\n");

const TYPE_ERROR = [
  "Check main.ts",
  "error: TS2322 [ERROR]: Type 'string' is not assignable to type 'number'.",
  'const n: number = "x";',
  "      ^",
  "    at file:///work/main/main.ts:1:7",
].join("\n");

const NPM_FAILURE = [
  'error: Error getting response at https://registry.npmjs.org/zod for package "zod"',
  "    0: error sending request for url (https://registry.npmjs.org/zod): dns error",
].join("\n");

Deno.test("parseCompileArgs() defaults to no named targets, no host, no help", () => {
  assert.deepEqual(parseCompileArgs([]), { targets: [], host: false, help: false });
});

Deno.test("parseCompileArgs() accepts repeated --target in both forms and drops duplicates", () => {
  const args = parseCompileArgs([
    "--target",
    "aarch64-apple-darwin",
    "--target=x86_64-pc-windows-msvc",
    "--target",
    "aarch64-apple-darwin",
  ]);
  assert.deepEqual(args.targets, ["aarch64-apple-darwin", "x86_64-pc-windows-msvc"]);
});

Deno.test("parseCompileArgs() reads --host and --help", () => {
  assert.equal(parseCompileArgs(["--host"]).host, true);
  assert.equal(parseCompileArgs(["-h"]).help, true);
  assert.equal(parseCompileArgs(["--help"]).help, true);
});

Deno.test("parseCompileArgs() rejects bad input with a one-line UsageError", () => {
  const cases: Array<[string[], RegExp]> = [
    [["--nope"], /^Unknown argument "--nope": run with --help/],
    [["--target", "sparc-sun-solaris"], /^Unknown target "sparc-sun-solaris": expected one of /],
    [["--target"], /^Option "--target" needs a value/],
    [["--target", "--host"], /^Option "--target" needs a value/],
    [["--host", "--target", "x86_64-apple-darwin"], /^Cannot combine "--host" with "--target"/],
  ];
  for (const [args, message] of cases) {
    assert.throws(() => parseCompileArgs(args), (error: unknown) => {
      assert.ok(error instanceof UsageError);
      assert.match(error.message, message);
      assert.ok(!error.message.includes("\n"));
      return true;
    });
  }
});

Deno.test("requestedTargets() gives all five by default, the named ones, or the host's", () => {
  assert.deepEqual(requestedTargets(parseCompileArgs([]), "x86_64-unknown-linux-gnu"), [
    ...TARGETS,
  ]);
  assert.equal(TARGETS.length, 5);
  assert.deepEqual(
    requestedTargets(parseCompileArgs(["--target", "x86_64-apple-darwin"]), "whatever"),
    ["x86_64-apple-darwin"],
  );
  assert.deepEqual(
    requestedTargets(parseCompileArgs(["--host"]), "aarch64-apple-darwin"),
    ["aarch64-apple-darwin"],
  );
});

Deno.test("requestedTargets() refuses --host on an unsupported host", () => {
  assert.throws(
    () => requestedTargets(parseCompileArgs(["--host"]), "riscv64gc-unknown-linux-gnu"),
    /Unsupported host target "riscv64gc-unknown-linux-gnu": pass --target/,
  );
});

Deno.test("outputPath() names dist/sentry-<target> and adds .exe only for Windows", () => {
  assert.equal(outputPath("x86_64-unknown-linux-gnu"), "dist/sentry-x86_64-unknown-linux-gnu");
  assert.equal(outputPath("aarch64-apple-darwin"), "dist/sentry-aarch64-apple-darwin");
  assert.equal(outputPath("x86_64-pc-windows-msvc"), "dist/sentry-x86_64-pc-windows-msvc.exe");
});

Deno.test("compileArgs() always embeds policies and embeds assets only when they exist", () => {
  assert.deepEqual(compileArgs("aarch64-unknown-linux-gnu", { includeAssets: false }), [
    "compile",
    "-A",
    "--include",
    "policies",
    "--include",
    "src/platform/bpf",
    "--include",
    "src/sensors/seccomp_worker.ts",
    "--target",
    "aarch64-unknown-linux-gnu",
    "-o",
    "dist/sentry-aarch64-unknown-linux-gnu",
    "main.ts",
  ]);
  const withAssets = compileArgs("x86_64-pc-windows-msvc", { includeAssets: true });
  assert.deepEqual(withAssets.slice(2, 6), [
    "--include",
    "policies",
    "--include",
    "src/api/assets",
  ]);
  assert.deepEqual(withAssets.slice(-3), [
    "-o",
    "dist/sentry-x86_64-pc-windows-msvc.exe",
    "main.ts",
  ]);
});

Deno.test("classifyCompileError() recognises a runtime download that failed", () => {
  const failure = classifyCompileError(DOWNLOAD_FAILURE);
  assert.equal(failure.kind, "runtime_download");
  assert.equal(failure.downloadHost, "dl.deno.land");
  assert.match(failure.detail, /^error sending request/);
});

Deno.test("classifyCompileError() recognises a DENORT_BIN that cannot be read", () => {
  const failure = classifyCompileError(MISSING_DENORT);
  assert.equal(failure.kind, "runtime_missing");
  assert.equal(failure.detail, `cannot read denort at "/nonexistent"`);
});

Deno.test("classifyCompileError() leaves type errors and npm failures as other", () => {
  const typeError = classifyCompileError(TYPE_ERROR);
  assert.equal(typeError.kind, "other");
  assert.match(typeError.detail, /^TS2322/);
  assert.equal(classifyCompileError(NPM_FAILURE).kind, "other");
  assert.equal(classifyCompileError("").detail, "deno compile failed without output");
});

Deno.test("failureMessage() gives the reason and the DENORT_BIN fix in one line", () => {
  const message = failureMessage(classifyCompileError(DOWNLOAD_FAILURE), {
    target: "x86_64-unknown-linux-gnu",
    denoVersion: "2.9.6",
  });
  assert.equal(
    message,
    `Cannot build "dist/sentry-x86_64-unknown-linux-gnu": the Deno runtime (denort 2.9.6) ` +
      `cannot be downloaded from dl.deno.land; set DENORT_BIN to a local ` +
      `denort-x86_64-unknown-linux-gnu binary (from https://github.com/denoland/deno/releases) ` +
      `and run again`,
  );
  for (const stderr of [MISSING_DENORT, TYPE_ERROR]) {
    const other = failureMessage(classifyCompileError(stderr), {
      target: "aarch64-apple-darwin",
      denoVersion: "2.9.6",
    });
    assert.match(other, /^Cannot build "dist\/sentry-aarch64-apple-darwin": /);
    assert.ok(!other.includes("\n"));
  }
});

function header(size: number, bytes: Record<number, number>): Uint8Array {
  const out = new Uint8Array(size);
  for (const [at, value] of Object.entries(bytes)) out[Number(at)] = value;
  return out;
}

Deno.test("sniffRuntimeTarget() reads the target from ELF, Mach-O and PE headers", () => {
  const elf = { 0: 0x7f, 1: 0x45, 2: 0x4c, 3: 0x46, 4: 2, 5: 1 };
  assert.equal(sniffRuntimeTarget(header(64, { ...elf, 18: 0x3e })), "x86_64-unknown-linux-gnu");
  assert.equal(sniffRuntimeTarget(header(64, { ...elf, 18: 0xb7 })), "aarch64-unknown-linux-gnu");
  assert.equal(sniffRuntimeTarget(header(64, { ...elf, 18: 0x28 })), undefined);
  const macho = { 0: 0xcf, 1: 0xfa, 2: 0xed, 3: 0xfe };
  assert.equal(
    sniffRuntimeTarget(header(32, { ...macho, 4: 0x07, 7: 0x01 })),
    "x86_64-apple-darwin",
  );
  assert.equal(
    sniffRuntimeTarget(header(32, { ...macho, 4: 0x0c, 7: 0x01 })),
    "aarch64-apple-darwin",
  );
  const pe = header(256, { 0: 0x4d, 1: 0x5a, 0x3c: 0x80, 0x80: 0x50, 0x81: 0x45, 0x84: 0x64 });
  pe[0x85] = 0x86;
  assert.equal(sniffRuntimeTarget(pe), "x86_64-pc-windows-msvc");
  assert.equal(sniffRuntimeTarget(new TextEncoder().encode("#!/bin/sh\n")), undefined);
  assert.equal(sniffRuntimeTarget(new Uint8Array(0)), undefined);
});

Deno.test("sniffRuntimeTarget() recognises the running deno executable as the host", () => {
  const file = Deno.openSync(Deno.execPath());
  try {
    const head = new Uint8Array(4096);
    const read = file.readSync(head) ?? 0;
    const sniffed = sniffRuntimeTarget(head.subarray(0, read));
    if (isTarget(Deno.build.target)) assert.equal(sniffed, Deno.build.target);
  } finally {
    file.close();
  }
});

Deno.test("isZip() spots a zipped denort", () => {
  assert.equal(isZip(header(8, { 0: 0x50, 1: 0x4b, 2: 3, 3: 4 })), true);
  assert.equal(isZip(header(8, { 0: 0x7f, 1: 0x45 })), false);
});

Deno.test("planTargets() builds every requested target without DENORT_BIN", () => {
  const plan = planTargets(TARGETS, { hostTarget: "x86_64-unknown-linux-gnu", explicit: false });
  assert.deepEqual(plan, { targets: [...TARGETS], skipped: [] });
});

Deno.test("planTargets() with DENORT_BIN builds only the runtime's target and says so", () => {
  const fromHeader = planTargets(TARGETS, {
    hostTarget: "x86_64-unknown-linux-gnu",
    denortBin: "/opt/denort",
    runtimeTarget: "aarch64-apple-darwin",
    explicit: false,
  });
  assert.deepEqual(fromHeader.targets, ["aarch64-apple-darwin"]);
  assert.equal(fromHeader.skipped.length, 4);
  assert.match(fromHeader.note ?? "", /^DENORT_BIN is set: building only aarch64-apple-darwin/);
  assert.match(fromHeader.note ?? "", /skipping x86_64-unknown-linux-gnu, /);

  const fromHost = planTargets(TARGETS, {
    hostTarget: "x86_64-unknown-linux-gnu",
    denortBin: "/opt/denort",
    explicit: false,
  });
  assert.deepEqual(fromHost.targets, ["x86_64-unknown-linux-gnu"]);

  const fromFlag = planTargets(["x86_64-pc-windows-msvc"], {
    hostTarget: "x86_64-unknown-linux-gnu",
    denortBin: "/opt/denort.exe",
    explicit: true,
  });
  assert.deepEqual(fromFlag, {
    targets: ["x86_64-pc-windows-msvc"],
    skipped: [],
    note: "DENORT_BIN is set: building only x86_64-pc-windows-msvc (a denort runtime serves " +
      "one target; per --target)",
  });
});

Deno.test("planTargets() refuses a DENORT_BIN that cannot serve the requested targets", () => {
  assert.throws(
    () =>
      planTargets(["aarch64-apple-darwin"], {
        hostTarget: "x86_64-unknown-linux-gnu",
        denortBin: "/opt/denort",
        runtimeTarget: "x86_64-unknown-linux-gnu",
        explicit: true,
      }),
    (error: unknown) =>
      error instanceof UsageError &&
      /is a runtime for "x86_64-unknown-linux-gnu", not "aarch64-apple-darwin"/.test(
        error.message,
      ),
  );
  const requested: Target[] = ["aarch64-apple-darwin", "x86_64-apple-darwin"];
  assert.throws(
    () =>
      planTargets(requested, {
        hostTarget: "x86_64-unknown-linux-gnu",
        denortBin: "/opt/denort",
        explicit: true,
      }),
    /serves only "x86_64-unknown-linux-gnu", which is not among the requested targets/,
  );
});

Deno.test("cachedRuntimePath() points where deno compile caches denort", () => {
  assert.equal(
    cachedRuntimePath("x86_64-unknown-linux-gnu", { denoDir: "/c/deno", denoVersion: "2.9.6" }),
    join("/c/deno", "dl", "release", "v2.9.6", "denort-x86_64-unknown-linux-gnu.zip"),
  );
});

Deno.test("summaryLine() lists what was built and what was not", () => {
  assert.equal(
    summaryLine({ built: [], notBuilt: ["x86_64-unknown-linux-gnu"] }),
    "Built 0 of 1 target; not built: x86_64-unknown-linux-gnu",
  );
  assert.equal(
    summaryLine({ built: ["x86_64-apple-darwin", "x86_64-pc-windows-msvc"], notBuilt: [] }),
    "Built 2 of 2 targets: dist/sentry-x86_64-apple-darwin, dist/sentry-x86_64-pc-windows-msvc.exe",
  );
});

// ---------------------------------------------------------------------------------------------
// End to end: run the real script, copied into a scratch project with a stub main.ts so the test
// does not depend on the state of the real main.ts. The stub reads an embedded policy the way
// Sentry does, through import.meta.url, so a passing build also proves `--include policies`.

const SCRIPT = fileURLToPath(new URL("./compile.ts", import.meta.url));
const PROJECT_CONFIG = join(dirname(dirname(SCRIPT)), "deno.json");
const STUB_MAIN = `
const policy = await Deno.readTextFile(new URL("./policies/probe.yaml", import.meta.url));
if (Deno.args[0] === "--version") console.log("sentry-stub 0.0.0 " + policy.trim());
`;
const E2E_TIMEOUT_MS = 180_000;

function note(message: string): void {
  Deno.stderr.writeSync(new TextEncoder().encode(`compile_test: ${message}\n`));
}

/** Which runtime, if any, deno compile can use for the host here. */
async function hostRuntime(): Promise<string | undefined> {
  const fromEnv = Deno.env.get("DENORT_BIN");
  if (fromEnv) return existsSync(fromEnv) ? `DENORT_BIN=${fromEnv}` : undefined;
  const dir = await denoDir();
  if (dir === undefined) return undefined;
  const cached = cachedRuntimePath(Deno.build.target, {
    denoDir: dir,
    denoVersion: Deno.version.deno,
  });
  return existsSync(cached) ? `cached ${cached}` : undefined;
}

const hostSupported = isTarget(Deno.build.target);
const runtime = hostSupported ? await hostRuntime() : undefined;
if (!hostSupported) {
  note(`skipping the end-to-end test: host "${Deno.build.target}" is not a release target`);
} else if (runtime === undefined) {
  note("no denort runtime here: the end-to-end test expects the one-line DENORT_BIN error");
} else {
  note(`denort runtime available (${runtime}): the end-to-end test builds and runs a binary`);
}

Deno.test({
  name: "compile.ts --host builds a runnable binary, or fails in one line naming DENORT_BIN",
  ignore: !hostSupported,
  async fn() {
    const project = await Deno.makeTempDir({ prefix: "sentry_compile_test_" });
    try {
      await Deno.mkdir(join(project, "scripts"));
      await Deno.mkdir(join(project, "policies"));
      await Deno.copyFile(SCRIPT, join(project, "scripts", "compile.ts"));
      await Deno.copyFile(PROJECT_CONFIG, join(project, "deno.json"));
      await Deno.writeTextFile(join(project, "policies", "probe.yaml"), "probe: embedded\n");
      await Deno.writeTextFile(join(project, "main.ts"), STUB_MAIN);
      // deno compile refuses an --include that does not exist.
      await Deno.mkdir(join(project, "src/platform/bpf"), { recursive: true });
      await Deno.writeTextFile(join(project, "src/platform/bpf/placeholder.txt"), "x\n");
      await Deno.mkdir(join(project, "src/sensors"), { recursive: true });
      await Deno.writeTextFile(join(project, "src/sensors/seccomp_worker.ts"), "export {};\n");

      const output = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "scripts/compile.ts", "--host"],
        cwd: project,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        env: { NO_COLOR: "1", SENTRY_DEBUG: "" },
        signal: AbortSignal.timeout(E2E_TIMEOUT_MS),
      }).output();
      const stdout = new TextDecoder().decode(output.stdout);
      const stderr = new TextDecoder().decode(output.stderr).trim();
      const binary = join(project, outputPath(Deno.build.target as Target));

      if (runtime === undefined) {
        assert.equal(output.code, 1, `expected exit 1, got ${output.code}: ${stderr}`);
        assert.equal(stderr.split("\n").length, 1, `expected one line on stderr, got:\n${stderr}`);
        assert.match(stderr, /^Cannot build "dist\/sentry-.*": .*DENORT_BIN/);
        assert.match(stdout, /Built 0 of 1 target; not built: /);
        assert.ok(!existsSync(binary));
        return;
      }
      assert.equal(output.code, 0, `expected exit 0, got ${output.code}: ${stderr}`);
      assert.match(stdout, /Built 1 of 1 target: dist\/sentry-/);
      const version = await new Deno.Command(binary, {
        args: ["--version"],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(30_000),
      }).output();
      const printed = new TextDecoder().decode(version.stdout);
      assert.equal(version.code, 0, new TextDecoder().decode(version.stderr));
      assert.match(
        printed,
        /^sentry-stub 0\.0\.0 probe: embedded/,
        `not a Sentry build: ${printed}`,
      );
    } finally {
      await Deno.remove(project, { recursive: true });
    }
  },
});
