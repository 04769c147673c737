// deno-lint-ignore-file no-console
/**
 * Noise of exact sensing: real interpreters (python3, node, sh, git) doing ordinary work under
 * every template, watched by a kernel tier. Every read of a library, a locale file or the
 * process's own `/proc` entries is journaled; none of them may become a denial or an alert.
 * Prints, per interpreter and template, the events journaled, the file reads among them, and the
 * reads that were denied or alerted (the noise, goal 0), next to the denials and alerts the
 * template raises on purpose (a program it does not allow, `python -c`).
 *
 *     deno run -A bench/noise_bench.ts [--sensor ebpf|seccomp|fanotify] [--quick]
 *
 * @module
 */
import { join } from "node:path";
import type { AgentEvent } from "../src/events/mod.ts";
import { TEMPLATES } from "../src/policy/mod.ts";
import { lastSessionEvents, realPython, sentryCommand } from "./_harness.ts";

/** One ordinary piece of work of an interpreter. */
interface Workload {
  name: string;
  argv: (ws: string) => string[];
}

async function workloads(): Promise<Workload[]> {
  // The system interpreter when there is one: a user-installed one (pyenv under ~) lives where
  // strict allows no reads, by design (see the note in the table's output).
  const python = await Deno.stat("/usr/bin/python3").then(() => "/usr/bin/python3", realPython);
  return [
    {
      name: "python3",
      argv: (ws) => [
        python,
        join(ws, "task.py"),
      ],
    },
    {
      name: "node",
      argv: (ws) => ["node", join(ws, "task.js")],
    },
    {
      name: "sh",
      argv: (ws) => ["/bin/sh", join(ws, "task.sh")],
    },
    { name: "git", argv: () => ["git", "status", "--short"] },
  ];
}

/** A workspace with a small git repository and the scripts of the workloads. */
async function workspace(): Promise<string> {
  const ws = await Deno.makeTempDir({ prefix: "sentry-noise-" });
  for (let i = 0; i < 20; i++) await Deno.writeTextFile(join(ws, `f${i}.txt`), `line ${i}\n`);
  await Deno.writeTextFile(
    join(ws, "task.py"),
    "import json, os, pathlib, email.parser, http.client, sqlite3, tempfile\n" +
      "data = [json.loads(json.dumps({'n': i})) for i in range(100)]\n" +
      "print(len(list(pathlib.Path('.').glob('*.txt'))), os.getcwd() != '')\n" +
      "pathlib.Path('out.json').write_text(json.dumps(data))\n",
  );
  await Deno.writeTextFile(
    join(ws, "task.js"),
    "const fs = require('fs'); const path = require('path'); const crypto = require('crypto');\n" +
      "const files = fs.readdirSync('.').filter((f) => f.endsWith('.txt'));\n" +
      "const h = crypto.createHash('sha256'); for (const f of files) h.update(fs.readFileSync(f));\n" +
      "fs.writeFileSync(path.join('.', 'out.txt'), h.digest('hex'));\n",
  );
  await Deno.writeTextFile(
    join(ws, "task.sh"),
    'for f in *.txt; do wc -l "$f" > /dev/null; done\ndate > out.sh.txt\nls -la > /dev/null\n',
  );
  const git = (...args: string[]) =>
    new Deno.Command("git", { args, cwd: ws, stdout: "null", stderr: "null" }).output();
  await git("init", "-q");
  await git("-c", "user.email=b@x", "-c", "user.name=bench", "add", ".");
  await git("-c", "user.email=b@x", "-c", "user.name=bench", "commit", "-qm", "init");
  return ws;
}

/** What one run journaled. */
interface Noise {
  events: number;
  reads: number;
  /** Reads denied or alerted: the noise. */
  noisyReads: AgentEvent[];
  /** Other denials and alerts (by the template's design). */
  other: AgentEvent[];
}

async function measure(
  work: Workload,
  options: { template: string; sensor: string; ws: string },
): Promise<Noise> {
  const home = await Deno.makeTempDir({ prefix: "sentry-noise-home-" });
  try {
    const [cmd, ...rest] = sentryCommand([
      "run",
      "--sensor",
      options.sensor,
      "--no-api",
      "--no-rollback",
      "--on-exit",
      "kill",
      "--policy",
      options.template,
      "--workspace",
      options.ws,
      // Sentry never pauses in this bench: it measures decisions, not responses.
      "--mode",
      "alert",
      "--",
      ...work.argv(options.ws),
    ]);
    await new Deno.Command(cmd as string, {
      args: rest,
      cwd: options.ws,
      env: { SENTRY_HOME: home },
      stdin: "null",
      stdout: "null",
      stderr: "null",
      signal: AbortSignal.timeout(60_000),
    }).output();
    const events = await lastSessionEvents(home);
    const flagged = (e: AgentEvent) => e.verdict === "deny" || e.response !== "none";
    const reads = events.filter((e) => e.kind === "file.read");
    return {
      events: events.length,
      reads: reads.length,
      noisyReads: reads.filter(flagged),
      other: events.filter((e) => e.kind !== "file.read" && flagged(e)),
    };
  } finally {
    await Deno.remove(home, { recursive: true });
  }
}

/** Runs the bench and prints its table; returns the number of noisy reads in all. */
export async function runNoiseBench(options: { sensor?: string; quick?: boolean } = {}): Promise<
  number
> {
  const sensor = options.sensor ?? "ebpf";
  const templates = options.quick ? ["default", "coding-agent", "strict"] : [...TEMPLATES];
  const ws = await workspace();
  let noisy = 0;
  const rows: string[][] = [[
    "interpreter",
    "template",
    "events",
    "file reads",
    "noisy reads",
    "by design",
  ]];
  const examples: string[] = [];
  try {
    for (const work of await workloads()) {
      for (const template of templates) {
        const n = await measure(work, { template, sensor, ws });
        noisy += n.noisyReads.length;
        rows.push([
          work.name,
          template,
          String(n.events),
          String(n.reads),
          String(n.noisyReads.length),
          n.other.length === 0
            ? "0"
            : `${n.other.length} (${[...new Set(n.other.map((e) => e.rule))].join(", ")})`,
        ]);
        for (const e of n.noisyReads.slice(0, 3)) {
          examples.push(
            `${work.name}/${template}: ${e.target} ${e.verdict} risk ${e.risk} (${e.rule})`,
          );
        }
      }
    }
  } finally {
    await Deno.remove(ws, { recursive: true });
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  for (const row of rows) console.log(row.map((c, i) => c.padEnd(widths[i]!)).join("  "));
  console.log(`\nnoisy reads in all: ${noisy} (goal 0), sensing tier ${sensor}`);
  for (const line of examples) console.log(`  ${line}`);
  return noisy;
}

if (import.meta.main) {
  const at = Deno.args.indexOf("--sensor");
  await runNoiseBench({
    ...(at >= 0 && Deno.args[at + 1] !== undefined ? { sensor: Deno.args[at + 1] } : {}),
    quick: Deno.args.includes("--quick"),
  });
}
