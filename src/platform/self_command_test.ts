import assert from "node:assert/strict";
import { join } from "node:path";
import { isCompiled, mainModulePath, selfCommand } from "./self_command.ts";

const DENO = "/usr/local/bin/deno";

Deno.test("selfCommand() in a compiled binary is just the binary", () => {
  const command = selfCommand({
    execPath: "/opt/sentry/sentry",
    mainModule: "file:///tmp/deno-compile-sentry/main.ts",
    standalone: true,
  });
  assert.deepEqual(command, ["/opt/sentry/sentry"]);
});

Deno.test("selfCommand() under deno run passes the deno.json beside main.ts", () => {
  const command = selfCommand({
    execPath: DENO,
    mainModule: "file:///work/sentry/main.ts",
    standalone: false,
    isFile: (path) => path === "/work/sentry/deno.json",
  });
  assert.deepEqual(command, [
    DENO,
    "run",
    "-A",
    "--config",
    "/work/sentry/deno.json",
    "/work/sentry/main.ts",
  ]);
});

Deno.test("selfCommand() under deno run leaves out --config when there is no deno.json", () => {
  const command = selfCommand({
    execPath: DENO,
    mainModule: "file:///work/sentry/main.ts",
    standalone: false,
    isFile: () => false,
  });
  assert.deepEqual(command, [DENO, "run", "-A", "/work/sentry/main.ts"]);
});

Deno.test("isCompiled() trusts the runtime's standalone flag when it has one", () => {
  const looksCompiled = { execPath: "/opt/sentry", mainModule: "file:///tmp/deno-compile-x/m.ts" };
  assert.equal(isCompiled({ ...looksCompiled, standalone: false }), false);
  assert.equal(
    isCompiled({ execPath: DENO, mainModule: "file:///a/m.ts", standalone: true }),
    true,
  );
  assert.equal(isCompiled(), Deno.build.standalone);
});

Deno.test("isCompiled() falls back to the deno-compile path and the executable's name", () => {
  const cases: Array<[string, string, boolean]> = [
    ["/opt/sentry", "file:///tmp/deno-compile-sentry/main.ts", true],
    ["C:\\bin\\sentry.exe", "file:///C:/Temp/deno-compile-sentry.exe/main.ts", true],
    [DENO, "file:///tmp/deno-compile-sentry/main.ts", true],
    ["/opt/sentry-x86_64-unknown-linux-gnu", "file:///src/main.ts", true],
    [DENO, "file:///work/sentry/main.ts", false],
    ["C:\\deno\\deno.exe", "file:///C:/work/main.ts", false],
  ];
  for (const [execPath, mainModule, expected] of cases) {
    assert.equal(isCompiled({ execPath, mainModule, standalone: null }), expected, execPath);
  }
});

Deno.test("mainModulePath() refuses a main module that is not a local file", () => {
  assert.equal(
    mainModulePath({ mainModule: "file:///work/sentry/main.ts" }),
    "/work/sentry/main.ts",
  );
  assert.throws(
    () =>
      selfCommand({ execPath: DENO, mainModule: "https://example.com/main.ts", standalone: false }),
    (error: unknown) =>
      error instanceof TypeError &&
      error.message === `Cannot locate Sentry's main module "https://example.com/main.ts": ` +
          "it is not a local file",
  );
});

// A real round trip: a script that imports self_command.ts prints selfCommand(), and running that
// command with "child" must run the same script again.
const PROBE = `
import { selfCommand } from ${JSON.stringify(new URL("./self_command.ts", import.meta.url).href)};
if (Deno.args[0] === "child") console.log("child-ok " + Deno.cwd());
else console.log(JSON.stringify(selfCommand()));
`;

async function run(argv: string[], cwd: string): Promise<string> {
  const [program, ...args] = argv;
  assert.ok(program !== undefined);
  const output = await new Deno.Command(program, {
    args,
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
    signal: AbortSignal.timeout(60_000),
  }).output();
  const stderr = new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 0, `${argv.join(" ")} failed: ${stderr}`);
  return new TextDecoder().decode(output.stdout).trim();
}

Deno.test("selfCommand() re-runs the same script under deno run", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sentry_self_command_" });
  const other = await Deno.makeTempDir({ prefix: "sentry_self_command_cwd_" });
  try {
    const script = join(dir, "main.ts");
    const config = join(dir, "deno.json");
    await Deno.writeTextFile(script, PROBE);
    await Deno.writeTextFile(config, "{}\n");

    const command: unknown = JSON.parse(await run([Deno.execPath(), "run", "-A", script], dir));
    assert.ok(Array.isArray(command) && command.every((part) => typeof part === "string"));
    assert.deepEqual(command, [Deno.execPath(), "run", "-A", "--config", config, script]);

    // From another directory too: the command must not depend on the caller's cwd.
    assert.equal(await run([...command, "child"], other), `child-ok ${other}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(other, { recursive: true });
  }
});
