import YAML from "yaml";
import type { AgentEvent } from "../events/mod.ts";
import type { CompiledPolicy } from "./compile.ts";
import { type Action, evaluate, explainMatches } from "./evaluate.ts";
import {
  escapeGlob,
  normalizePath,
  parseEndpoint,
  parseIp,
  parseNetworkEntry,
} from "./patterns.ts";
import type { Rule } from "./schema.ts";

/** Where collapsed paths are anchored: `${WORKSPACE}`, `~`, a scratch directory, or `/`. */
export interface PathRoot {
  /** The root as written in a glob: `${WORKSPACE}`, `~`, `/tmp`, or "" for `/`. */
  label: string;
  /** How many directories below the root a collapse may happen at least (0: the root itself). */
  minDepth: number;
}

/** How {@link collapsePaths} groups paths. */
export interface CollapseOptions {
  /** A directory with more distinct entries than this becomes one glob. */
  threshold: number;
  /** Roots, besides `/` (which never collapses above depth 2). Longest label first wins. */
  roots?: readonly PathRoot[];
}

/** The scratch directories whose children are throw-away names: they collapse from depth 0. */
export const SCRATCH_ROOTS: readonly PathRoot[] = [
  { label: "/tmp", minDepth: 0 },
  { label: "/var/tmp", minDepth: 0 },
  { label: "/dev/shm", minDepth: 0 },
];

/** The roots a learned policy writes paths against: the workspace, the home, scratch dirs. */
export const LEARN_ROOTS: readonly PathRoot[] = [
  { label: "${WORKSPACE}", minDepth: 0 },
  { label: "~", minDepth: 1 },
  ...SCRATCH_ROOTS,
];

interface TrieNode {
  terminal: boolean;
  children: Map<string, TrieNode>;
}

/**
 * Collapses paths into globs by directory: a directory with more than `threshold` distinct
 * entries seen becomes `dir/*` (only files seen) or `dir/**` (subdirectories seen too); other
 * paths stay exact. Paths are written as a policy writes them (`${WORKSPACE}/src/a.ts`,
 * `~/.cache/x`, `/usr/lib/y`); path characters that globs give a meaning to are escaped. Never
 * collapses `/` or a root above its `minDepth`: `/` and `/usr` stay exact lists, `~` never
 * becomes `~/**`. Pure; the output is sorted.
 */
export function collapsePaths(paths: Iterable<string>, options: CollapseOptions): string[] {
  const roots = [...(options.roots ?? LEARN_ROOTS)].sort((a, b) => b.label.length - a.label.length);
  const tries = new Map<string, TrieNode>();
  const out = new Set<string>();
  for (const path of paths) {
    const root = roots.find((r) => path === r.label || path.startsWith(r.label + "/"));
    const label = root?.label ?? "";
    if (root === undefined && !path.startsWith("/")) continue;
    let node = tries.get(label);
    if (node === undefined) tries.set(label, node = { terminal: false, children: new Map() });
    const rest = path.slice(label.length);
    for (const part of rest.split("/")) {
      if (part === "") continue;
      let next: TrieNode | undefined = node.children.get(part);
      if (next === undefined) {
        node.children.set(part, next = { terminal: false, children: new Map() });
      }
      node = next;
    }
    node.terminal = true;
  }
  for (const [label, trie] of tries) {
    const minDepth = roots.find((r) => r.label === label)?.minDepth ?? 2;
    walk(trie, { label, prefix: label, depth: 0, minDepth, threshold: options.threshold, out });
  }
  return [...out].sort();
}

function walk(
  node: TrieNode,
  at: {
    label: string;
    prefix: string;
    depth: number;
    minDepth: number;
    threshold: number;
    out: Set<string>;
  },
): void {
  if (node.terminal) at.out.add(at.prefix === "" ? "/" : at.prefix);
  if (at.depth >= at.minDepth && node.children.size > at.threshold) {
    const deep = [...node.children.values()].some((c) => c.children.size > 0);
    at.out.add(`${at.prefix}/${deep ? "**" : "*"}`);
    return;
  }
  for (const [name, child] of node.children) {
    walk(child, { ...at, prefix: `${at.prefix}/${globSegment(name)}`, depth: at.depth + 1 });
  }
}

/**
 * A path segment as a glob that matches it: glob characters escaped, and a `$` that would start
 * a variable (`$HOME`, `${X}`) turned into `?`, which matches it (and, harmlessly, any other
 * single character): policies have no escape for a literal `$NAME`.
 */
function globSegment(name: string): string {
  return escapeGlob(name).replace(/\$(?=[A-Za-z_{])/g, "?");
}

/** One endpoint a session reached: a host name or address, and a port (null when none). */
export interface SeenEndpoint {
  host: string;
  port: number | null;
}

/**
 * Turns endpoints into network entries: `host:port` each, except that a domain with at least
 * `threshold` distinct subdomains seen on one port becomes `*.domain:port` (the bare domain,
 * if seen, stays an entry of its own: `*.domain` does not match it). Addresses stay exact. The
 * domain is the last two labels (three under `co.uk`-style suffixes). Pure; sorted output.
 */
export function collapseHosts(endpoints: Iterable<SeenEndpoint>, threshold: number): string[] {
  const out = new Set<string>();
  const byDomain = new Map<string, Set<string>>();
  const withPort = (host: string, port: number | null) => {
    const h = host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
    return port === null ? h : `${h}:${port}`;
  };
  for (const { host, port } of endpoints) {
    const name = host.toLowerCase().replace(/\.$/, "");
    if (parseIp(name) !== null || !name.includes(".")) {
      out.add(withPort(name, port));
      continue;
    }
    const key = `${registrableDomain(name)}\0${port ?? ""}`;
    let set = byDomain.get(key);
    if (set === undefined) byDomain.set(key, set = new Set());
    set.add(name);
  }
  for (const [key, names] of byDomain) {
    const [domain = "", portText = ""] = key.split("\0");
    const port = portText === "" ? null : Number(portText);
    const subs = [...names].filter((n) => n !== domain);
    if (subs.length >= threshold) {
      out.add(withPort(`*.${domain}`, port));
      if (names.has(domain)) out.add(withPort(domain, port));
    } else {
      for (const n of names) out.add(withPort(n, port));
    }
  }
  return [...out].sort();
}

const SECOND_LEVEL = new Set(["co", "com", "net", "org", "gov", "ac", "edu"]);

/** The registrable domain of a host name, by a light rule: two labels, three under `co.uk`. */
export function registrableDomain(host: string): string {
  const labels = host.split(".");
  const n = labels.length;
  const twoLetterTld = (labels[n - 1] ?? "").length === 2;
  const take = n >= 3 && twoLetterTld && SECOND_LEVEL.has(labels[n - 2] ?? "") ? 3 : 2;
  return labels.slice(-take).join(".");
}

/** A process entry as a learned policy writes it. */
export type LearnedProcess = string | { name: string; args: string };

/**
 * A process entry for a program seen with these argument strings: by name, with an `args`
 * pattern when the arguments are stable. Stable means at most `threshold` distinct argument
 * strings (then they are listed exactly), else at most `threshold` distinct first arguments
 * (then those are, as a prefix); otherwise the name alone.
 */
export function processEntry(
  name: string,
  args: ReadonlyMap<string, number>,
  threshold: number,
): LearnedProcess {
  const glob = escapeGlob(name);
  if (args.size === 0) return glob;
  const distinct = [...args.keys()].sort();
  if (distinct.length <= threshold) {
    return { name: glob, args: `^(?:${distinct.map(escapeRegExp).join("|")})$` };
  }
  const firsts = new Set(distinct.map((a) => a.split(" ")[0] ?? ""));
  if (firsts.size <= threshold && !firsts.has("")) {
    return { name: glob, args: `^(?:${[...firsts].sort().map(escapeRegExp).join("|")})(?: |$)` };
  }
  return glob;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** How a {@link PolicyLearner} writes what it saw. */
export interface LearnerOptions {
  /** The user's home directory, written as `~`. */
  home: string;
  /** Distinct entries of a directory past which it becomes one glob; default 5. */
  collapse?: number;
  /** Subdomains of one domain from which it becomes `*.domain`; default 3. */
  hosts?: number;
  /** Distinct argument strings (or first arguments) still called stable; default 3. */
  args?: number;
}

/** One session a learner reads, with the template compiled for its workspace. */
export interface LearnSession {
  id: string;
  agent: string;
  workspace: string;
  /** The template, compiled with this session's workspace. */
  template: CompiledPolicy;
}

/** What the template denied, grouped by the entry that denied it. */
interface DeniedGroup {
  section: string;
  entry: string;
  count: number;
  examples: string[];
  /** For a default deny: the targets that an allow entry would let through, as written. */
  targets: Set<string>;
  /** For a rule: the rule, to write a commented-out override with an exception. */
  rule: Rule | null;
  /** Whether the targets are paths (written as globs). */
  paths: boolean;
}

/** What {@link PolicyLearner.render} writes at the top. */
export interface RenderOptions {
  /** The policy's `name`. */
  name: string;
  /** What the policy `extends`: a template name or a file path. */
  extends: string;
}

const FILE_SECTIONS = ["read", "write", "delete"] as const;
type FileSection = typeof FILE_SECTIONS[number];
const EXAMPLES = 3;
const SUGGESTIONS = 20;

/**
 * Learns a policy from journaled sessions, event by event (memory grows with the distinct
 * paths, hosts and programs, not with the events): what the template allows becomes allow
 * entries, with paths collapsed by directory, hosts by domain and programs by name with stable
 * argument patterns; what the template denies stays denied and is written as commented-out
 * entries with their counts. The output is deterministic YAML with comments, and extends the
 * template with each learned section made `default: deny`.
 */
export class PolicyLearner {
  readonly #options: Required<LearnerOptions>;
  readonly #files = new Map<FileSection, Map<string, number>>(
    FILE_SECTIONS.map((s) => [s, new Map()]),
  );
  readonly #processes = new Map<string, { runs: number; args: Map<string, number> }>();
  readonly #network = new Map<string, { ep: SeenEndpoint; count: number }>();
  readonly #database = new Map<string, { ep: SeenEndpoint; count: number }>();
  readonly #denied = new Map<string, DeniedGroup>();
  /** Sections an allowed action could not be written for: they keep the template's default. */
  readonly #unwritable = new Map<string, number>();
  readonly #sessions = new Map<string, { agent: string; events: number }>();
  #events = 0;

  /** A learner with its thresholds. */
  constructor(options: LearnerOptions) {
    this.#options = { collapse: 5, hosts: 3, args: 3, ...options };
  }

  /** How many events were read. */
  get events(): number {
    return this.#events;
  }

  /** Reads one journaled event of `session`. */
  add(event: AgentEvent, session: LearnSession): void {
    this.#events++;
    const s = this.#sessions.get(session.id);
    if (s === undefined) this.#sessions.set(session.id, { agent: session.agent, events: 1 });
    else s.events++;
    const decision = evaluate(event, session.template);
    if (decision.verdict === "deny") {
      this.#deny(event, session, decision.rule);
      return;
    }
    // What the engine allows whatever the sections say needs no entry: process exits, signals,
    // resources, listens (the template's network.listen stands), unix sockets, monitors off.
    if (decision.rule.startsWith("monitors.")) return;
    switch (event.kind) {
      case "file.read":
        // A lookup of a missing name is no violation under a default deny either: nothing read.
        if (isLookup(event)) return;
        this.#file("read", event.target, session);
        return;
      case "file.write":
      case "file.create":
        this.#file("write", event.target, session);
        return;
      case "file.delete":
        this.#file("delete", event.target, session);
        return;
      case "file.rename": {
        this.#file("write", event.target, session);
        const from = event.detail.from;
        if (typeof from === "string") this.#file("delete", from, session);
        return;
      }
      case "proc.exec": {
        const exe = event.exe ?? event.cmdline[0] ?? "";
        const name = exe.slice(exe.lastIndexOf("/") + 1);
        if (name === "") {
          this.#unwritable.set("processes", (this.#unwritable.get("processes") ?? 0) + 1);
          return;
        }
        let p = this.#processes.get(name);
        if (p === undefined) this.#processes.set(name, p = { runs: 0, args: new Map() });
        p.runs++;
        // Past a few hundred distinct argument strings they are not stable: stop counting them.
        if (p.args.size <= 256) {
          const args = event.cmdline.slice(1).join(" ");
          p.args.set(args, (p.args.get(args) ?? 0) + 1);
        }
        return;
      }
      case "net.connect":
      case "db.connect": {
        const ep = parseEndpoint(event.target);
        if (ep.unix !== null) return;
        if (event.kind === "db.connect") {
          this.#endpoint(this.#database, { host: ep.host, port: ep.port });
          return;
        }
        const hosts = event.detail.hosts;
        const names = Array.isArray(hosts)
          ? hosts.filter((h): h is string => typeof h === "string")
          : [];
        // A name the address resolved to is what a person reads and what survives a new address.
        this.#endpoint(this.#network, { host: names.sort()[0] ?? ep.host, port: ep.port });
        return;
      }
      default:
        return;
    }
  }

  #endpoint(map: Map<string, { ep: SeenEndpoint; count: number }>, ep: SeenEndpoint): void {
    const key = `${ep.host}\0${ep.port ?? ""}`;
    const seen = map.get(key);
    if (seen === undefined) map.set(key, { ep, count: 1 });
    else seen.count++;
  }

  #file(section: FileSection, path: string, session: LearnSession): void {
    const written = writePath(normalizePath(path), session.workspace, this.#options.home);
    if (written === null) {
      const key = `files.${section}`;
      this.#unwritable.set(key, (this.#unwritable.get(key) ?? 0) + 1);
      return;
    }
    const map = this.#files.get(section) as Map<string, number>;
    map.set(written, (map.get(written) ?? 0) + 1);
  }

  #deny(event: AgentEvent, session: LearnSession, rule: string): void {
    const action: Action = event;
    const matches = explainMatches(action, session.template);
    const hit = matches.find((m) =>
      m.section === "rules"
        ? m.entry === rule && (m.exceptions?.length ?? 0) === 0
        : m.section === rule
    );
    const section = hit?.section ?? rule;
    const entry = hit === undefined || hit.section.endsWith(".default") ? "" : hit.entry;
    const key = `${section}\0${entry}`;
    let group = this.#denied.get(key);
    if (group === undefined) {
      const r = section === "rules"
        ? session.template.policy.rules.find((x) => x.id === entry) ?? null
        : null;
      this.#denied.set(
        key,
        group = {
          section,
          entry,
          count: 0,
          examples: [],
          targets: new Set(),
          rule: r,
          paths: event.kind.startsWith("file."),
        },
      );
    }
    group.count++;
    const example = `${event.kind} ${event.target}`;
    if (group.examples.length < EXAMPLES && !group.examples.includes(example)) {
      group.examples.push(example);
    }
    if (group.targets.size < SUGGESTIONS) {
      const written = event.kind.startsWith("file.")
        ? writePath(normalizePath(event.target), session.workspace, this.#options.home)
        : event.kind === "proc.exec"
        ? escapeGlob((event.exe ?? event.cmdline[0] ?? "").replace(/^.*\//, ""))
        : event.target;
      if (written !== null && written !== "") group.targets.add(written);
    }
  }

  /** Writes the learned policy: deterministic, commented YAML that `policy validate` accepts. */
  render(options: RenderOptions): string {
    const o = this.#options;
    const q = (s: string) => JSON.stringify(s);
    const lines: string[] = [];
    const sessions = [...this.#sessions.entries()].sort(([a], [b]) => a.localeCompare(b));
    lines.push(
      `# Learned by \`sentry policy learn\` from ${sessions.length} session(s), ${this.#events} events:`,
      ...sessions.map(([id, s]) => `#   ${id} (${s.agent}, ${s.events} events)`),
      `# It extends ${
        q(options.extends)
      } and allows what the sessions did that the template allows.`,
      "# Each section listed here is `default: deny`: what the sessions did not do is denied, apart",
      "# from what the template itself allows. Everything the template denies stays denied; those",
      "# actions are listed at the end, commented out, with their counts, for a person to decide.",
      `# Paths: a directory with more than ${o.collapse} distinct entries became one glob; hosts: ${o.hosts}`,
      `# or more subdomains of a domain became *.domain; programs: arguments are pinned when at most`,
      `# ${o.args} distinct ones (or first words) were seen.`,
      `name: ${q(options.name)}`,
      `description: ${
        q(`Learned from ${sessions.length} session(s) of ${
          [...new Set(sessions.map(([, s]) => s.agent))].sort().join(", ") || "no agent"
        }, on top of ${options.extends}`)
      }`,
      `extends: ${q(options.extends)}`,
      "",
    );
    lines.push("files:");
    for (const section of FILE_SECTIONS) {
      const seen = this.#files.get(section) as Map<string, number>;
      const globs = collapsePaths(seen.keys(), { threshold: o.collapse });
      lines.push(`  ${section}:`);
      const skipped = this.#unwritable.get(`files.${section}`) ?? 0;
      if (skipped > 0) {
        lines.push(
          `    # ${skipped} allowed action(s) had a path no glob can name: the template's default stays.`,
        );
      } else {
        lines.push("    default: deny");
      }
      lines.push(`    # ${seen.size} distinct path(s) seen, written as ${globs.length} entr(ies).`);
      lines.push(globs.length === 0 ? "    allow: []" : "    allow:");
      for (const g of globs) lines.push(`      - ${q(g)}`);
    }
    lines.push("");
    const endpoints = [...this.#network.values()];
    const entries = collapseHosts(endpoints.map((e) => e.ep), o.hosts).filter(validEntry);
    lines.push("network:");
    lines.push("  default: deny");
    lines.push(
      `  # ${
        endpoints.reduce((a, e) => a + e.count, 0)
      } connection(s) to ${endpoints.length} endpoint(s).`,
    );
    lines.push(entries.length === 0 ? "  allow: []" : "  allow:");
    for (const e of entries) lines.push(`    - ${q(e)}`);
    lines.push("");
    lines.push("processes:");
    const unnamed = this.#unwritable.get("processes") ?? 0;
    if (unnamed > 0) {
      lines.push(
        `  # ${unnamed} program(s) ran without a known name: the template's default stays.`,
      );
    } else {
      lines.push("  default: deny");
    }
    const names = [...this.#processes.keys()].sort();
    lines.push(names.length === 0 ? "  allow: []" : "  allow:");
    for (const name of names) {
      const p = this.#processes.get(name) as { runs: number; args: Map<string, number> };
      const entry = processEntry(name, p.args.size > 256 ? new Map() : p.args, o.args);
      const text = typeof entry === "string"
        ? q(entry)
        : `{ name: ${q(entry.name)}, args: ${q(entry.args)} }`;
      lines.push(`    - ${text} # ${p.runs} run(s), ${p.args.size} distinct argument string(s)`);
    }
    lines.push("");
    const dbs = [...this.#database.values()];
    const dbEntries = collapseHosts(dbs.map((e) => e.ep), Infinity).filter(validEntry);
    const ports = [...new Set(dbs.map((d) => d.ep.port).filter((p): p is number => p !== null))]
      .sort((a, b) => a - b);
    lines.push("database:");
    lines.push(
      `  # ${dbs.reduce((a, e) => a + e.count, 0)} connection(s) on database ports ${
        ports.join(", ") || "(none)"
      }.`,
    );
    lines.push(dbEntries.length === 0 ? "  allow: []" : "  allow:");
    for (const e of dbEntries) lines.push(`    - ${q(e)}`);
    lines.push(...this.#renderDenied());
    return lines.join("\n") + "\n";
  }

  #renderDenied(): string[] {
    const groups = [...this.#denied.values()].sort((a, b) =>
      b.count - a.count || a.section.localeCompare(b.section) || a.entry.localeCompare(b.entry)
    );
    const total = groups.reduce((a, g) => a + g.count, 0);
    const out = [
      "",
      `# ---- Denied by the template: ${total} action(s), kept denied ----`,
    ];
    if (groups.length === 0) out.push("# None.");
    for (const g of groups) {
      const what = g.entry === "" ? g.section : `${g.section} ${JSON.stringify(g.entry)}`;
      out.push("#");
      out.push(`# ${what}: ${g.count} action(s), e.g. ${g.examples.join("; ")}`);
      out.push(...commentedFix(g).map((l) => `#${l === "" ? "" : " "}${l}`));
    }
    return out;
  }
}

/** The commented-out entry that would let a denied group through, or why none can. */
function commentedFix(g: DeniedGroup): string[] {
  const file = /^files\.(read|write|delete)\.default$/.exec(g.section);
  // Paths are written as globs that match them exactly (escaped), like the learned lists.
  const targets = g.paths
    ? collapsePaths(g.targets, { threshold: Infinity })
    : [...g.targets].sort();
  const list = (indent: string) => targets.map((t) => `${indent}- ${JSON.stringify(t)}`);
  if (file !== null) {
    return [
      "To allow these, add to the lists above:",
      `files: { ${file[1]}: { allow: [...] } }`,
      ...list("  "),
    ];
  }
  if (g.section === "network.default" || g.section === "database.allow") {
    return [
      `To allow these, add to ${
        g.section === "database.allow" ? "database" : "network"
      }.allow above:`,
      ...list("  "),
    ];
  }
  if (g.section === "processes.default") {
    return ["To allow these, add to processes.allow above:", ...list("  ")];
  }
  if (g.section === "rules" && g.rule !== null) {
    // A rule with the same id replaces the template's: an exception written here exempts these.
    const rule = {
      ...g.rule,
      exceptions: [...g.rule.exceptions, { target: targets.length > 0 ? targets : ["TODO"] }],
    };
    const yaml = YAML.stringify({ rules: [rule] }, { lineWidth: 0 }).trimEnd().split("\n");
    return ["To exempt these, replace the rule with one that adds an exception:", ...yaml];
  }
  return [
    "The template denies this in a deny list, a limit or Sentry's guard: a policy that extends it",
    "cannot lift it (lists append), which is deliberate.",
  ];
}

function validEntry(entry: string): boolean {
  try {
    parseNetworkEntry(entry);
    return true;
  } catch {
    return false;
  }
}

function isLookup(event: AgentEvent): boolean {
  const errno = event.detail.errno;
  return event.detail.result === "failed" && (errno === "ENOENT" || errno === "ENOTDIR");
}

/**
 * A path as a learned policy writes it: under the workspace `${WORKSPACE}/...`, under the home
 * `~/...`, else absolute; null for a path that is not absolute.
 */
export function writePath(path: string, workspace: string, home: string): string | null {
  if (!path.startsWith("/")) return null;
  // The longer root first: a workspace inside the home is the workspace. (Called once per file
  // event of a learned session: no allocation but the result.)
  const wsFirst = workspace.length >= home.length;
  const first = wsFirst ? workspace : home;
  const second = wsFirst ? home : workspace;
  if (under(path, first)) return (wsFirst ? "${WORKSPACE}" : "~") + path.slice(first.length);
  if (under(path, second)) return (wsFirst ? "~" : "${WORKSPACE}") + path.slice(second.length);
  return path;
}

function under(path: string, root: string): boolean {
  return root !== "/" && path.startsWith(root) &&
    (path.length === root.length || path.charCodeAt(root.length) === 47);
}
