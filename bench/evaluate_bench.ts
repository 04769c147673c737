// deno-lint-ignore-file no-console
/**
 * Evaluator throughput: events per second on one core, under coding-agent with 20 custom rules,
 * over a realistic mix (70% allowed workspace file actions, the rest spread over the other
 * kinds). Baselines in the same run: coding-agent without the extra rules, and
 * `JSON.stringify` of each event (what the journal does for every event anyway).
 *
 * Run: deno task bench   (or: deno run -A bench/evaluate_bench.ts)
 * @module
 */
import type { Kind } from "../src/events/mod.ts";
import {
  type Action,
  compilePolicy,
  evaluate,
  loadPolicy,
  type ResolvedPolicy,
  type Rule,
} from "../src/policy/mod.ts";

const HOME = "/home/agent";
const WORKSPACE = "/work/project";

/** A deterministic pseudo-random generator, so every run measures the same mix. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** Twenty custom rules of the kinds users write: secrets, exports, tools, hosts, databases. */
export function customRules(): Rule[] {
  const rules: Rule[] = [];
  const add = (
    id: string,
    match: Rule["match"],
    risk: number,
    exceptions: Rule["exceptions"] = [],
  ) =>
    rules.push({
      id,
      description: `Detect ${id.replaceAll("_", " ")}`,
      match,
      risk,
      exceptions,
      enabled: true,
    });
  add("env_file_read", { kind: "file.read", target: "**/.env*" }, 40, [{
    target: "**/.env.example",
  }]);
  add("customer_export", { kind: ["file.write", "file.create"], target: "**/*export*.csv" }, 45);
  add("key_material", { kind: "file.*", target: ["**/*.pem", "**/*.p12"] }, 50);
  add("git_dir_write", { kind: "file.write", target: "${WORKSPACE}/.git/config" }, 30);
  add(
    "lockfile_delete",
    { kind: "file.delete", target: ["**/package-lock.json", "**/Cargo.lock"] },
    25,
  );
  add("ci_config_change", {
    kind: ["file.write", "file.delete"],
    target: "${WORKSPACE}/.github/**",
  }, 35);
  add("dotfile_write", { kind: "file.write", target: "~/.*" }, 30, [{ target: "~/.cache/**" }]);
  add("tmp_exec", { kind: "proc.exec", process: { path: "/tmp/**" } }, 50);
  add(
    "force_push",
    { kind: "proc.exec", process: { name: "git", args: "push.*(--force|-f\\b)" } },
    45,
  );
  add("package_publish", { kind: "proc.exec", process: { name: "npm", args: "^publish" } }, 50);
  add(
    "docker_privileged",
    { kind: "proc.exec", process: { name: "docker", args: "--privileged" } },
    60,
  );
  add("chmod_world", { kind: "proc.exec", process: { name: "chmod", args: "(777|o\\+w)" } }, 40);
  add("crypto_miner", { kind: "proc.exec", process: ["xmrig", "minerd"] }, 90);
  add("pastebin", { kind: "net.connect", target: "*pastebin*" }, 50);
  add("tor_ports", { kind: "net.connect", target: ["*:9001", "*:9050"] }, 60);
  add("smtp_out", { kind: "net.connect", target: ["*:25", "*:465", "*:587"] }, 40);
  add("prod_db", { kind: "db.connect", target: "10.20.*" }, 70);
  add("redis_any", { kind: "db.connect", target: "*:6379" }, 30);
  add("listen_low_port", { kind: "net.listen", target: ["*:22", "*:80"] }, 40);
  add("memory_blowup", { kind: "resource.memory" }, 20);
  return rules;
}

/** Builds the event mix: 70% allowed workspace file actions, 30% over the other kinds. */
export function eventMix(count: number, seed = 42): Action[] {
  const rand = rng(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(rand() * items.length)] as T;
  const dirs = ["src", "src/lib", "tests", "docs", "scripts", "src/components/ui"];
  const exts = ["ts", "py", "md", "json", "rs", "go"];
  const out: Action[] = [];
  for (let i = 0; i < count; i++) {
    if (rand() < 0.7) {
      const kind = pick<Kind>(["file.read", "file.read", "file.read", "file.write", "file.create"]);
      const path = `${WORKSPACE}/${pick(dirs)}/file_${Math.floor(rand() * 500)}.${pick(exts)}`;
      out.push({
        kind,
        target: path,
        exe: "/usr/bin/python3",
        cmdline: ["python3", "agent.py"],
        detail: {},
      });
      continue;
    }
    switch (Math.floor(rand() * 10)) {
      case 0:
        out.push({
          kind: "file.read",
          target: pick([
            "/usr/lib/python3.11/os.py",
            "/etc/hosts",
            `${HOME}/.ssh/id_rsa`,
            `${WORKSPACE}/.env`,
          ]),
          exe: "/usr/bin/python3",
          cmdline: ["python3"],
          detail: {},
        });
        break;
      case 1:
        out.push({
          kind: "file.write",
          target: pick([
            "/tmp/out.json",
            `${HOME}/.bashrc`,
            "/etc/passwd",
            `${WORKSPACE}/export_users.csv`,
          ]),
          exe: "/usr/bin/python3",
          cmdline: ["python3"],
          detail: {},
        });
        break;
      case 2:
        out.push({
          kind: "file.delete",
          target: pick([
            `${WORKSPACE}/build/a.o`,
            `${WORKSPACE}/package-lock.json`,
            "/var/log/syslog",
          ]),
          exe: "/usr/bin/rm",
          cmdline: ["rm", "-f", "x"],
          detail: {},
        });
        break;
      case 3: {
        const [exe = "/usr/bin/true", ...args] = pick([
          ["/usr/bin/git", "status"],
          ["/usr/bin/git", "push", "--force"],
          ["/usr/bin/python3", "-m", "pytest"],
          ["/usr/bin/sudo", "apt", "install"],
          ["/usr/bin/npm", "test"],
        ]) as string[];
        out.push({
          kind: "proc.exec",
          target: [exe, ...args].join(" "),
          exe,
          cmdline: [exe, ...args],
          detail: {},
        });
        break;
      }
      case 4:
        out.push({
          kind: "proc.exit",
          target: "python3",
          exe: "/usr/bin/python3",
          cmdline: ["python3"],
          detail: { code: 0 },
        });
        break;
      case 5:
      case 6:
        out.push({
          kind: "net.connect",
          target: pick([
            "140.82.112.3:443",
            "104.16.0.35:443",
            "169.254.169.254:80",
            "127.0.0.1:3000",
            "10.0.0.7:25",
          ]),
          exe: "/usr/bin/python3",
          cmdline: ["python3"],
          detail: { hosts: pick([["github.com"], ["registry.npmjs.org"], []]) },
        });
        break;
      case 7:
        out.push({
          kind: "db.connect",
          target: pick(["127.0.0.1:5432", "10.20.0.5:5432", "127.0.0.1:6379"]),
          exe: "/usr/bin/python3",
          cmdline: ["python3"],
          detail: {},
        });
        break;
      case 8:
        out.push({
          kind: "net.listen",
          target: pick(["127.0.0.1:3000", "0.0.0.0:8080"]),
          exe: "/usr/bin/node",
          cmdline: ["node"],
          detail: {},
        });
        break;
      default:
        out.push(
          pick<Action>([{ kind: "resource.cpu", target: "tree", detail: { percent: 95 } }, {
            kind: "resource.memory",
            target: "tree",
            detail: { mb: 3000 },
          }]),
        );
    }
  }
  return out;
}

/** Measures a per-event function over the events for at least `ms` milliseconds. */
function measure(events: Action[], fn: (a: Action) => unknown, ms: number): number {
  let sink = 0;
  // Warm up the JIT before timing.
  for (let i = 0; i < events.length; i++) sink += fn(events[i] as Action) ? 1 : 0;
  let n = 0;
  const start = performance.now();
  let now = start;
  while (now - start < ms) {
    for (let i = 0; i < events.length; i++) sink += fn(events[i] as Action) ? 1 : 0;
    n += events.length;
    now = performance.now();
  }
  if (sink < 0) throw new Error("unreachable");
  return n / ((now - start) / 1000);
}

/** Runs the benchmark and prints a table; returns the events/s with 20 rules. */
export async function runEvaluateBench(options: { ms?: number } = {}): Promise<number> {
  const ms = options.ms ?? 2000;
  const base: ResolvedPolicy = await loadPolicy("coding-agent");
  const withRules: ResolvedPolicy = { ...base, rules: [...base.rules, ...customRules()] };
  const ctx = { home: HOME, workspace: WORKSPACE, env: {} };
  const compiledRules = compilePolicy(withRules, ctx);
  const compiledBase = compilePolicy(base, ctx);
  const events = eventMix(10_000);
  const allowed = events.filter((e) => evaluate(e, compiledRules).verdict === "allow").length;

  const rRules = measure(events, (e) => evaluate(e, compiledRules), ms);
  const rBase = measure(events, (e) => evaluate(e, compiledBase), ms);
  const rJson = measure(events, (e) => JSON.stringify(e), ms);
  const fmt = (n: number) => Math.round(n).toLocaleString("en-US").padStart(12);
  console.log(
    `evaluate() throughput, one core, ${events.length} events in the mix (${
      (allowed / events.length * 100).toFixed(1)
    }% allowed), ${withRules.rules.length} rules`,
  );
  console.log(`${"case".padEnd(44)}${"events/s".padStart(12)}  ratio`);
  console.log(`${"coding-agent + 20 custom rules".padEnd(44)}${fmt(rRules)}  1.00`);
  console.log(
    `${"coding-agent, template rules only".padEnd(44)}${fmt(rBase)}  ${
      (rBase / rRules).toFixed(2)
    }`,
  );
  console.log(
    `${"baseline: JSON.stringify(event)".padEnd(44)}${fmt(rJson)}  ${(rJson / rRules).toFixed(2)}`,
  );
  console.log(
    `goal: >= 1,000,000 events/s with 20 rules: ${rRules >= 1_000_000 ? "met" : "NOT met"}`,
  );
  return rRules;
}

if (import.meta.main) await runEvaluateBench();
