/**
 * `DENORT_BIN` that is not a denort runtime: a full deno is refused before anything is built,
 * and a binary that does not run the app is never moved into place.
 *
 * @module
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  checkBuiltVersion,
  FULL_DENO_MARKER,
  hasFullDenoMarker,
  isDenoVersionOutput,
  KERNEL_INCLUDES,
  notDenortMessage,
} from "./compile.ts";

const SCRIPT = fileURLToPath(new URL("./compile.ts", import.meta.url));
const PROJECT_CONFIG = join(dirname(dirname(SCRIPT)), "deno.json");
const STUB_MAIN = `
const policy = await Deno.readTextFile(new URL("./policies/probe.yaml", import.meta.url));
if (Deno.args[0] === "--version") console.log("sentry-stub 0.0.0 " + policy.trim());
`;

async function denoVersionOutput(): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["--version"],
    stdout: "piped",
    stderr: "null",
    env: { NO_COLOR: "1" },
  }).output();
  return new TextDecoder().decode(out.stdout);
}

Deno.test("isDenoVersionOutput() tells deno's own --version from an app's", async () => {
  assert.equal(isDenoVersionOutput(await denoVersionOutput()), true);
  assert.equal(
    isDenoVersionOutput("deno 2.9.6 (stable, release, x86_64-unknown-linux-gnu)\nv8 14.0\n"),
    true,
  );
  assert.equal(isDenoVersionOutput("0.1.0\n"), false);
  assert.equal(isDenoVersionOutput("sentry-stub 0.0.0 probe: embedded\n"), false);
  // An app that merely mentions deno is not deno.
  assert.equal(isDenoVersionOutput("sentry 0.1.0 (deno 2.9.6)\n"), false);
  assert.equal(isDenoVersionOutput(""), false);
});

Deno.test("hasFullDenoMarker() finds the CLI's help text in deno and not in other executables", async () => {
  assert.equal(hasFullDenoMarker(await Deno.readFile(Deno.execPath())), true);
  assert.equal(hasFullDenoMarker(await Deno.readFile("/bin/sh")), false);
  const planted = new TextEncoder().encode(`\x7fELF....${FULL_DENO_MARKER}....`);
  assert.equal(hasFullDenoMarker(planted), true);
});

Deno.test("checkBuiltVersion() accepts the app's version and names what a wrong runtime printed", async () => {
  assert.equal(checkBuiltVersion({ code: 0, stdout: "0.1.0\n" }, "0.1.0"), null);
  assert.match(
    checkBuiltVersion({ code: 0, stdout: await denoVersionOutput() }, "0.1.0") ?? "",
    /^the binary runs deno, not the app \(its --version printed "deno \d+\.\d+\.\d+.*"\): the runtime is a full deno, not denort$/,
  );
  assert.equal(
    checkBuiltVersion({ code: 0, stdout: "" }, "0.1.0"),
    `the binary's --version printed "" (exit 0), not the app's "0.1.0"`,
  );
  assert.match(checkBuiltVersion({ code: 1, stdout: "0.1.0\n" }, "0.1.0") ?? "", /exit 1/);
  assert.equal(
    notDenortMessage("/usr/bin/deno", "x86_64-unknown-linux-gnu").includes("\n"),
    false,
  );
});

/** A scratch project with a stub entry point, the script, and the paths it embeds. */
async function scratchProject(): Promise<string> {
  const project = await Deno.makeTempDir({ prefix: "sentry_compile_runtime_test_" });
  await Deno.mkdir(join(project, "scripts"));
  await Deno.mkdir(join(project, "policies"));
  await Deno.copyFile(SCRIPT, join(project, "scripts", "compile.ts"));
  await Deno.copyFile(PROJECT_CONFIG, join(project, "deno.json"));
  await Deno.writeTextFile(join(project, "policies", "probe.yaml"), "probe: embedded\n");
  await Deno.writeTextFile(join(project, "main.ts"), STUB_MAIN);
  for (const path of KERNEL_INCLUDES) {
    const full = join(project, path);
    if (path.endsWith(".ts")) {
      await Deno.mkdir(dirname(full), { recursive: true });
      await Deno.writeTextFile(full, "export {};\n");
    } else {
      await Deno.mkdir(full, { recursive: true });
      await Deno.writeTextFile(join(full, "placeholder.txt"), "x\n");
    }
  }
  return project;
}

async function compile(project: string, denortBin: string, args: string[]) {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "scripts/compile.ts", ...args],
    cwd: project,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", SENTRY_DEBUG: "", DENORT_BIN: denortBin },
    signal: AbortSignal.timeout(180_000),
  }).output();
  return {
    code: output.code,
    stdout: new TextDecoder().decode(output.stdout),
    stderr: new TextDecoder().decode(output.stderr).trim(),
  };
}

/** Every file under `dir`, relative, or none when it does not exist. */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return [...Deno.readDirSync(dir)].map((e) => e.name);
}

Deno.test("compile.ts refuses a DENORT_BIN that is the real deno, in one line, writing nothing", async () => {
  const project = await scratchProject();
  try {
    for (const args of [["--host"], ["--target", "x86_64-unknown-linux-gnu"]]) {
      const result = await compile(project, Deno.execPath(), args);
      assert.equal(result.code, 2, result.stderr);
      assert.equal(result.stderr.split("\n").length, 1, result.stderr);
      assert.match(
        result.stderr,
        /^DENORT_BIN ".*" is a full deno, not a denort runtime: a binary built on it would run deno and ignore Sentry; set DENORT_BIN to the denort binary inside denort-[\w-]+\.zip \(of this deno's version, \d+\.\d+\.\d+\) or unset it$/,
      );
      assert.deepEqual(filesUnder(join(project, "dist")), []);
    }
  } finally {
    await Deno.remove(project, { recursive: true });
  }
});

Deno.test({
  name: "compile.ts never moves into place a binary that does not run the app",
  // The check runs binaries built for this host; /bin/true stands for a runtime that is not denort.
  ignore: Deno.build.target !== "x86_64-unknown-linux-gnu" || !existsSync("/bin/true"),
  async fn() {
    const project = await scratchProject();
    try {
      // An x86_64 ELF that is not a deno at all: deno compile appends the app to it and
      // "succeeds"; the binary then runs `true`, not the app.
      const fake = join(project, "fake-denort");
      await Deno.copyFile("/bin/true", fake);
      const result = await compile(project, fake, ["--host"]);
      assert.equal(result.code, 1, result.stderr);
      assert.equal(result.stderr.split("\n").length, 1, result.stderr);
      assert.match(
        result.stderr,
        /^Cannot build "dist\/sentry-x86_64-unknown-linux-gnu": the binary's --version printed ".*" \(exit \d+\), not the app's "sentry-stub 0\.0\.0 probe: embedded"; set DENORT_BIN \(now ".*fake-denort"\) to a denort binary or unset it$/,
      );
      assert.match(result.stdout, /Built 0 of 1 target; not built: x86_64-unknown-linux-gnu/);
      assert.deepEqual(filesUnder(join(project, "dist")), [], "no binary, no staging file");
    } finally {
      await Deno.remove(project, { recursive: true });
    }
  },
});
