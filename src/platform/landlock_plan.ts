/**
 * The Landlock plan of a `sentry run` under the seccomp tier: which rules the launcher adds
 * before it execs the agent, computed from deny lists by a pure function (the directory listing
 * comes in through {@link PlanHost}, so tests run on a fake tree).
 *
 * Landlock is allow-list based: a ruleset *handles* rights, and a handled right is granted only
 * beneath a path a rule names. A deny list maps onto it by groups of rights:
 * - READ (`READ_FILE|READ_DIR`), WRITE (`WRITE_FILE|TRUNCATE|MAKE_*|REFER`) and DELETE
 *   (`REMOVE_FILE|REMOVE_DIR`) are always handled (REFER is denied by Landlock unless granted, so
 *   it is handled and granted like the rest of WRITE);
 * - a group with no denied path is granted on `/`;
 * - for a group with denied paths, the group is granted on every sibling of every ancestor of
 *   every denied path, and never on an ancestor itself nor on a denied path.
 *
 * What this costs, and where paths escape it (the README says the same):
 * - in an ancestor directory (`~` when `~/.ssh` is denied, `/` almost always) the group's rights
 *   are not granted on the directory itself: for READ it cannot be listed; for WRITE nothing can
 *   be created or renamed into it directly; for DELETE nothing directly in it can be removed; and
 *   a file created there later gets none of the group's rights. Existing files keep theirs;
 * - Landlock rules are on inodes: an existing hard link elsewhere, or a bind mount of a denied
 *   directory, reaches the same file under rights of its own;
 * - EXECUTE is handled only when a plan denies it (the binaries of denied commands, group
 *   `execute`), with the same sibling scheme: a file created later directly in an ancestor
 *   (`/usr/bin` when `/usr/bin/nc` is denied) cannot be executed, and a copy of a denied binary
 *   under another name elsewhere (or a hard link) runs. IOCTL_DEV is never handled.
 *
 * Which deny globs Landlock can express: an exact path, or a static prefix followed by `/**`, or
 * a last segment with wildcards (optionally followed by `/**`), which is expanded against the
 * directory as it is now (its other entries are granted, so a match created later gets nothing).
 * A wildcard before the last segment, a glob that does not start at `/`, and anything under
 * `/proc` (where processes' directories come and go) are listed as not enforceable.
 *
 * @module
 */

import picomatch from "picomatch";

/** Landlock's filesystem access rights (`LANDLOCK_ACCESS_FS_*`), as bits. */
export const ACCESS_FS = {
  EXECUTE: 1 << 0,
  WRITE_FILE: 1 << 1,
  READ_FILE: 1 << 2,
  READ_DIR: 1 << 3,
  REMOVE_DIR: 1 << 4,
  REMOVE_FILE: 1 << 5,
  MAKE_CHAR: 1 << 6,
  MAKE_DIR: 1 << 7,
  MAKE_REG: 1 << 8,
  MAKE_SOCK: 1 << 9,
  MAKE_FIFO: 1 << 10,
  MAKE_BLOCK: 1 << 11,
  MAKE_SYM: 1 << 12,
  REFER: 1 << 13,
  TRUNCATE: 1 << 14,
  IOCTL_DEV: 1 << 15,
} as const;

/** Landlock's scopes (`LANDLOCK_SCOPE_*`, ABI 6): IPC the domain may not reach out of. */
export const SCOPE = {
  ABSTRACT_UNIX_SOCKET: 1 << 0,
  SIGNAL: 1 << 1,
} as const;

/** The rights a rule on a file (not a directory) may carry; others make the kernel say EINVAL. */
export const FILE_ACCESS = ACCESS_FS.EXECUTE | ACCESS_FS.WRITE_FILE | ACCESS_FS.READ_FILE |
  ACCESS_FS.TRUNCATE | ACCESS_FS.IOCTL_DEV;

/**
 * A group of rights a deny list takes away: the three of the policy's file sections, and
 * `execute` for the binaries of denied commands.
 */
export type RightGroup = "read" | "write" | "delete" | "execute";

/** The groups of the policy's file sections (and of Sentry's own directories), in plan order. */
export const RIGHT_GROUPS: readonly ("read" | "write" | "delete")[] = ["read", "write", "delete"];

/** Every group a plan knows, in plan order; `execute` is handled only when something denies it. */
export const PLAN_GROUPS: readonly RightGroup[] = [...RIGHT_GROUPS, "execute"];

const A = ACCESS_FS;
const GROUP_BITS: Readonly<Record<RightGroup, number>> = {
  read: A.READ_FILE | A.READ_DIR,
  write: A.WRITE_FILE | A.TRUNCATE | A.MAKE_CHAR | A.MAKE_DIR | A.MAKE_REG | A.MAKE_SOCK |
    A.MAKE_FIFO | A.MAKE_BLOCK | A.MAKE_SYM | A.REFER,
  delete: A.REMOVE_FILE | A.REMOVE_DIR,
  execute: A.EXECUTE,
};

/** A group's rights on a kernel of Landlock `abi` (REFER came with ABI 2, TRUNCATE with 3). */
export function groupAccess(group: RightGroup, abi: number): number {
  let bits = GROUP_BITS[group];
  if (abi < 2) bits &= ~A.REFER;
  if (abi < 3) bits &= ~A.TRUNCATE;
  return bits;
}

/** One deny glob to map, already expanded to an absolute glob. */
export interface DenyEntry {
  group: RightGroup;
  /** Where it comes from, for notices: `files.read.deny`, or `sentry` for Sentry's own files. */
  source: string;
  /** The glob as written, for notices. */
  glob: string;
  /** The glob expanded (`~`, `${HOME}`, `${WORKSPACE}`, variables): absolute, escaped. */
  path: string;
}

/** What a directory entry is, without following a symlink. */
export type EntryType = "directory" | "file" | "symlink" | "other";

/** One entry of a directory listing. */
export interface DirEntry {
  name: string;
  type: EntryType;
}

/** The file system as the planner sees it: injected, so that planning stays pure. */
export interface PlanHost {
  /** The path with every symlink resolved, or null when it does not exist. */
  realPath(path: string): string | null;
  /** What is at a path (a final symlink not followed), or null when nothing is. */
  typeOf(path: string): EntryType | null;
  /** The entries of a directory; throws an Error saying why when it cannot be listed. */
  list(dir: string): readonly DirEntry[];
}

/** One Landlock rule: `access` is granted on `path` and beneath it. */
export interface LandlockRule {
  path: string;
  access: number;
}

/** A deny glob Landlock cannot express, for the notice at start. */
export interface Unenforceable {
  source: string;
  glob: string;
  reason: string;
}

/** What the launcher applies (JSON-able: it travels in a file). */
export interface LandlockPlan {
  /** The Landlock ABI the plan was made for. */
  abi: number;
  /** `handled_access_fs` of the ruleset. */
  handledFs: number;
  /** `scoped` of the ruleset (0 before ABI 6). */
  scoped: number;
  /** Path-beneath rules, sorted by path, one per path. */
  rules: LandlockRule[];
  /**
   * The denied paths of each group (real paths; one under another denied tree is left out):
   * `beneath` when everything under the path is denied too, false for a directory that loses
   * the group's rights itself while its entries keep them.
   */
  denied: Record<"read" | "write" | "delete", DeniedPath[]> & {
    /** The binaries that lose EXECUTE (absent in a plan that denies no command). */
    execute?: DeniedPath[];
  };
  /** The deny globs it could not express. */
  unenforceable: Unenforceable[];
  /**
   * TCP port ranges (inclusive) the agent may not connect to (ABI 4): the launcher handles
   * `LANDLOCK_ACCESS_NET_CONNECT_TCP` and grants it on every other port. Absent or empty: the
   * network is not handled.
   */
  tcpDenied?: [number, number][];
}

/** A path a group's rights are taken from. */
export interface DeniedPath {
  path: string;
  beneath: boolean;
}

/** Options for {@link planLandlock}. */
export interface PlanOptions {
  /** The kernel's Landlock ABI (1 or more). */
  abi: number;
  /** The deny globs, each in its group. */
  deny: readonly DenyEntry[];
  host: PlanHost;
}

/** What one deny entry takes away: a whole tree, or a directory without its entries. */
type TargetKind = "tree" | "dir";

interface Target {
  path: string;
  kind: TargetKind;
}

/**
 * Computes the plan: for each group, the denied paths (globs expanded against the file system
 * as it is now), then the rules that grant the group everywhere else. A glob it cannot express
 * is listed in `unenforceable`; the others are all enforced. Pure given `host`.
 *
 * @throws {RangeError} for an ABI below 1.
 */
export function planLandlock(options: PlanOptions): LandlockPlan {
  const { abi, host } = options;
  if (!Number.isInteger(abi) || abi < 1) throw new RangeError(`Bad Landlock ABI "${abi}"`);
  const lister = cachedLister(host);
  const unenforceable: Unenforceable[] = [];
  const byGroup = new Map<RightGroup, { entry: DenyEntry; targets: Target[] }[]>(
    PLAN_GROUPS.map((g) => [g, []]),
  );
  for (const entry of options.deny) {
    const result = targetsOf(entry.path, host, lister);
    if (typeof result === "string") {
      unenforceable.push({ source: entry.source, glob: entry.glob, reason: result });
    } else {
      byGroup.get(entry.group)?.push({ entry, targets: result });
    }
  }
  const access = new Map<string, number>();
  const grant = (path: string, bits: number) => {
    if (bits !== 0) access.set(path, (access.get(path) ?? 0) | bits);
  };
  const denied = { read: [], write: [], delete: [], execute: [] } as Record<
    RightGroup,
    DeniedPath[]
  >;
  let handledFs = 0;
  // EXECUTE is handled only when something denies it: handling it costs a rule per sibling.
  const groups = PLAN_GROUPS.filter((g) =>
    g !== "execute" || options.deny.some((d) => d.group === "execute")
  );
  for (const group of groups) {
    const bits = groupAccess(group, abi);
    handledFs |= bits;
    let live = byGroup.get(group) ?? [];
    // Drop the entries whose ancestors cannot be listed (their siblings could not be granted),
    // until every needed directory lists.
    for (;;) {
      const { trees, dirs } = prune(live.flatMap((l) => l.targets));
      const ancestors = ancestorsOf(trees, dirs);
      const failed = new Map<string, string>();
      for (const dir of ancestors) {
        const listed = lister(dir);
        if (typeof listed === "string") failed.set(dir, listed);
      }
      if (failed.size === 0) {
        denied[group] = [
          ...[...trees.keys()].map((path) => ({ path, beneath: true })),
          ...[...dirs].map((path) => ({ path, beneath: false })),
        ].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
        if (trees.size === 0 && dirs.size === 0) {
          grant("/", bits);
          break;
        }
        for (const dir of ancestors) {
          for (const child of lister(dir) as readonly DirEntry[]) {
            if (child.type === "symlink") continue;
            const path = join(dir, child.name);
            if (ancestors.has(path) || trees.has(path)) continue;
            grant(path, child.type === "directory" ? bits : bits & FILE_ACCESS);
          }
        }
        break;
      }
      live = live.filter((l) => {
        for (const t of l.targets) {
          for (const dir of [...properAncestors(t.path), ...(t.kind === "dir" ? [t.path] : [])]) {
            const why = failed.get(dir);
            if (why !== undefined) {
              unenforceable.push({ source: l.entry.source, glob: l.entry.glob, reason: why });
              return false;
            }
          }
        }
        return true;
      });
    }
  }
  const rules = [...access.entries()]
    .map(([path, bits]) => ({ path, access: bits }))
    .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return {
    abi,
    handledFs,
    scoped: abi >= 6 ? SCOPE.SIGNAL | SCOPE.ABSTRACT_UNIX_SOCKET : 0,
    rules,
    denied,
    unenforceable: dedupe(unenforceable),
  };
}

/**
 * Whether a plan grants `access` on `path` (an absolute, real path): the union of the rules on
 * the path and its ancestors must hold every handled bit asked for. A string model of what the
 * kernel does on inodes (it ignores hard links and bind mounts), for a supervisor that opens
 * files on the agent's behalf and must not grant more than the agent's own Landlock domain.
 */
export function landlockAllows(
  plan: LandlockPlan,
  request: { path: string; access: number },
): boolean {
  const needed = request.access & plan.handledFs;
  if (needed === 0) return true;
  const index = indexOf(plan);
  let granted = index.get("/") ?? 0;
  let at = request.path.indexOf("/", 1);
  for (;;) {
    const prefix = at < 0 ? request.path : request.path.slice(0, at);
    granted |= index.get(prefix) ?? 0;
    if ((needed & ~granted) === 0) return true;
    if (at < 0) return false;
    at = request.path.indexOf("/", at + 1);
  }
}

const O_WRONLY = 0o1;
const O_RDWR = 0o2;
const O_TRUNC = 0o1000;

/**
 * Whether a plan lets an open through: `path` is the real path of the file (or, for a file
 * that `creates`, of the new name), `flags` the open flags. Reading needs READ_FILE (READ_DIR
 * for a directory), writing WRITE_FILE, O_TRUNC TRUNCATE, and a new file MAKE_REG on its
 * directory.
 */
export function landlockAllowsOpen(
  plan: LandlockPlan,
  open: { path: string; flags: number; directory: boolean; creates: boolean },
): boolean {
  const mode = open.flags & 3;
  const reads = mode !== O_WRONLY;
  const writes = mode === O_WRONLY || mode === O_RDWR;
  if (open.creates) {
    const slash = open.path.lastIndexOf("/");
    const dir = slash <= 0 ? "/" : open.path.slice(0, slash);
    if (!landlockAllows(plan, { path: dir, access: A.MAKE_REG })) return false;
  }
  let access = 0;
  if (open.directory) access |= reads ? A.READ_DIR : 0;
  else {
    access |= reads ? A.READ_FILE : 0;
    access |= writes ? A.WRITE_FILE : 0;
    // The kernel checks TRUNCATE only for a file that existed.
    access |= (open.flags & O_TRUNC) !== 0 && !open.creates ? A.TRUNCATE : 0;
  }
  return landlockAllows(plan, { path: open.path, access });
}

/**
 * Reads a plan back from its JSON (the launcher's `--landlock` file), checking every field: the
 * launcher must not apply half a plan.
 *
 * @throws {SyntaxError} when the text is not JSON.
 * @throws {TypeError} naming the first field that is wrong.
 */
export function parseLandlockPlan(text: string): LandlockPlan {
  const value: unknown = JSON.parse(text);
  const bad = (field: string) => new TypeError(`Bad Landlock plan: ${field}`);
  if (typeof value !== "object" || value === null) throw bad("not an object");
  const v = value as Record<string, unknown>;
  const int = (field: string, min: number) => {
    const n = v[field];
    if (typeof n !== "number" || !Number.isInteger(n) || n < min) throw bad(`"${field}"`);
    return n;
  };
  const abi = int("abi", 1);
  const handledFs = int("handledFs", 0);
  const scoped = int("scoped", 0);
  if (!Array.isArray(v.rules)) throw bad(`"rules"`);
  const rules = v.rules.map((r: unknown, i: number) => {
    const rule = r as Record<string, unknown> | null;
    if (
      typeof rule !== "object" || rule === null || typeof rule.path !== "string" ||
      !rule.path.startsWith("/") || typeof rule.access !== "number" ||
      !Number.isInteger(rule.access) || rule.access <= 0 || (rule.access & ~handledFs) !== 0
    ) throw bad(`rules[${i}]`);
    return { path: rule.path, access: rule.access };
  });
  const denied = { read: [], write: [], delete: [], execute: [] } as Record<
    RightGroup,
    DeniedPath[]
  >;
  const d = v.denied as Record<string, unknown> | undefined;
  for (const group of PLAN_GROUPS) {
    const list = d?.[group] ?? [];
    if (
      !Array.isArray(list) ||
      list.some((p) => typeof p?.path !== "string" || typeof p?.beneath !== "boolean")
    ) throw bad(`"denied.${group}"`);
    denied[group] = list.map((p) => ({ path: p.path, beneath: p.beneath }));
  }
  const unenforceable = Array.isArray(v.unenforceable) ? v.unenforceable as Unenforceable[] : [];
  const tcp = v.tcpDenied ?? [];
  const port = (p: unknown) => typeof p === "number" && Number.isInteger(p) && p >= 1 && p <= 65535;
  if (
    !Array.isArray(tcp) ||
    tcp.some((r) =>
      !Array.isArray(r) || r.length !== 2 || !port(r[0]) || !port(r[1]) || r[0] > r[1]
    ) ||
    (tcp.length > 0 && abi < 4)
  ) throw bad(`"tcpDenied"`);
  return {
    abi,
    handledFs,
    scoped,
    rules,
    denied,
    unenforceable,
    ...(tcp.length > 0 ? { tcpDenied: tcp as [number, number][] } : {}),
  };
}

// Globs to targets

const PROC = "/proc";
const MAX_ALTERNATIVES = 64;

/** The targets of one expanded glob, or why Landlock cannot express it. */
function targetsOf(
  glob: string,
  host: PlanHost,
  lister: (dir: string) => readonly DirEntry[] | string,
): Target[] | string {
  const alternatives = expandBraces(glob);
  if (typeof alternatives === "string") return alternatives;
  const out: Target[] = [];
  for (const alternative of alternatives) {
    const result = alternativeTargets(alternative, host, lister);
    if (typeof result === "string") return result;
    out.push(...result);
  }
  return out;
}

function alternativeTargets(
  glob: string,
  host: PlanHost,
  lister: (dir: string) => readonly DirEntry[] | string,
): Target[] | string {
  if (!glob.startsWith("/")) return "it does not start at /";
  const segments = splitSegments(glob);
  const first = segments.findIndex((s) => !s.literal);
  const prefix = "/" + segments.slice(0, first < 0 ? segments.length : first)
    .map((s) => s.text).join("/");
  const lexical = normalize(prefix);
  if (lexical === null) return "it climbs above / with ..";
  if (lexical === PROC || lexical.startsWith(PROC + "/")) {
    return "it is under /proc, whose entries come and go with processes";
  }
  const rest = first < 0 ? [] : segments.slice(first);
  const star = rest[0];
  if (star === undefined) return resolved(lexical, host, "dir");
  if (star.raw === "**" && rest.length === 1) return resolved(lexical, host, "tree");
  const tail = rest.slice(1);
  const deep = tail.length === 1 && tail[0]?.raw === "**";
  if (star.raw.includes("**") || !(tail.length === 0 || deep)) {
    return "it has a wildcard before its last path segment";
  }
  // A wildcard in the last segment: every matching entry of the directory, as it is now; the
  // directory itself is denied as an ancestor, so that a match created later gets nothing.
  const real = host.realPath(lexical);
  // Nothing can match beneath a file.
  if (real !== null && host.typeOf(real) !== "directory") return [];
  const dir = resolved(lexical, host, "dir");
  if (typeof dir === "string") return dir;
  const [at] = dir;
  // A missing directory: denied whole, since nothing in it exists yet.
  if (at === undefined || at.kind === "tree") return dir;
  const listed = lister(at.path);
  if (typeof listed === "string") return listed;
  const matcher = picomatch.makeRe(star.raw, { dot: true });
  const out: Target[] = [at];
  for (const entry of listed) {
    if (!matcher.test(entry.name)) continue;
    const path = join(at.path, entry.name);
    const real = entry.type === "symlink" ? host.realPath(path) : path;
    // A dangling symlink names nothing now; the entry itself gets nothing, as an ancestor's.
    if (real === null) continue;
    const type = real === path ? entry.type : host.typeOf(real);
    out.push({ path: real, kind: deep || type !== "directory" ? "tree" : "dir" });
  }
  return out;
}

/**
 * The target at a lexical path: its real path when it exists (`kind` for a directory, else a
 * tree), else the first missing component under its real parent, as a tree (nothing beneath
 * it exists yet). Nothing for a path under a file; a reason for one through a dangling symlink.
 */
function resolved(path: string, host: PlanHost, kind: TargetKind): Target[] | string {
  const real = host.realPath(path);
  if (real !== null) {
    return [{
      path: real,
      kind: kind === "dir" && host.typeOf(real) === "directory" ? "dir" : "tree",
    }];
  }
  const parts = path.split("/").filter((p) => p !== "");
  for (let i = parts.length - 1; i >= 0; i--) {
    const parent = host.realPath("/" + parts.slice(0, i).join("/"));
    if (parent === null) continue;
    const at = join(parent, parts[i] as string);
    const type = host.typeOf(at);
    if (type === null) return [{ path: at, kind: "tree" }];
    if (type === "symlink") return `its path goes through a dangling symlink, "${at}"`;
    // A file where a directory should be: nothing can exist beneath it.
    return [];
  }
  return [];
}

/** Keeps the targets no tree covers; a tree wins over a directory at the same path. */
function prune(targets: readonly Target[]): { trees: Map<string, true>; dirs: Set<string> } {
  const trees = new Map<string, true>();
  const sorted = [...new Set(targets.filter((t) => t.kind === "tree").map((t) => t.path))].sort();
  for (const path of sorted) {
    if (!coveredBy(path, trees)) trees.set(path, true);
  }
  const dirs = new Set<string>();
  for (const t of targets) {
    if (t.kind === "dir" && !trees.has(t.path) && !coveredBy(t.path, trees)) dirs.add(t.path);
  }
  return { trees, dirs };
}

function coveredBy(path: string, trees: ReadonlyMap<string, true>): boolean {
  for (const ancestor of properAncestors(path)) if (trees.has(ancestor)) return true;
  return false;
}

/** Every directory whose entries must be listed: proper ancestors of targets, and dir targets. */
function ancestorsOf(trees: ReadonlyMap<string, true>, dirs: ReadonlySet<string>): Set<string> {
  const out = new Set<string>(dirs);
  for (const path of [...trees.keys(), ...dirs]) {
    for (const ancestor of properAncestors(path)) out.add(ancestor);
  }
  return out;
}

/** `/a/b/c` gives `/`, `/a`, `/a/b`. */
function properAncestors(path: string): string[] {
  if (path === "/") return [];
  const out = ["/"];
  let at = path.indexOf("/", 1);
  while (at > 0) {
    out.push(path.slice(0, at));
    at = path.indexOf("/", at + 1);
  }
  return out;
}

function join(dir: string, name: string): string {
  return dir === "/" ? `/${name}` : `${dir}/${name}`;
}

/** Resolves `.` and `..` lexically; null when `..` climbs above `/`. */
function normalize(path: string): string | null {
  const out: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (out.pop() === undefined) return null;
    } else out.push(part);
  }
  return "/" + out.join("/");
}

function cachedLister(host: PlanHost): (dir: string) => readonly DirEntry[] | string {
  const cache = new Map<string, readonly DirEntry[] | string>();
  return (dir) => {
    let listed = cache.get(dir);
    if (listed === undefined) {
      try {
        listed = host.list(dir);
      } catch (error) {
        listed = `cannot list "${dir}": ${error instanceof Error ? error.message : String(error)}`;
      }
      cache.set(dir, listed);
    }
    return listed;
  };
}

function dedupe(list: Unenforceable[]): Unenforceable[] {
  const seen = new Set<string>();
  return list.filter((u) => {
    const key = `${u.source}\0${u.glob}\0${u.reason}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

const indexes = new WeakMap<LandlockPlan, Map<string, number>>();

function indexOf(plan: LandlockPlan): Map<string, number> {
  let index = indexes.get(plan);
  if (index === undefined) {
    index = new Map();
    for (const rule of plan.rules) index.set(rule.path, (index.get(rule.path) ?? 0) | rule.access);
    indexes.set(plan, index);
  }
  return index;
}

// Glob syntax

interface Segment {
  /** The segment as written (escapes kept), for matching. */
  raw: string;
  /** The segment unescaped, when it is literal. */
  text: string;
  literal: boolean;
}

/** Splits an (escaped) glob on `/`, and says which segments are literal. */
function splitSegments(glob: string): Segment[] {
  const out: Segment[] = [];
  let raw = "";
  let text = "";
  let literal = true;
  const push = () => {
    if (raw !== "") out.push({ raw, text, literal });
    raw = text = "";
    literal = true;
  };
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i] as string;
    if (ch === "\\" && i + 1 < glob.length) {
      raw += ch + glob[i + 1];
      text += glob[i + 1];
      i++;
      continue;
    }
    if (ch === "/") {
      push();
      continue;
    }
    raw += ch;
    text += ch;
    if ("*?[]{}()|".includes(ch)) literal = false;
    // A leading `!` negates; `+(`, `@(` and `!(` are extglobs, caught by their `(`.
    else if (ch === "!" && raw.length === 1) literal = false;
  }
  push();
  return out;
}

/**
 * Expands `{a,b}` alternatives (nested too), leaving escapes as they are. A brace group with no
 * comma (a range such as `{1..3}`) is not expanded: the glob is then not expressible.
 */
function expandBraces(glob: string): string[] | string {
  const open = findBrace(glob);
  if (open === null) return [glob];
  const { start, end, parts } = open;
  if (parts.length < 2) return "it has a brace group without alternatives";
  const out: string[] = [];
  for (const part of parts) {
    const expanded = expandBraces(glob.slice(0, start) + part + glob.slice(end + 1));
    if (typeof expanded === "string") return expanded;
    out.push(...expanded);
    if (out.length > MAX_ALTERNATIVES) return `it expands to more than ${MAX_ALTERNATIVES} paths`;
  }
  return out;
}

/** The first top-level brace group: its bounds and its comma-separated parts. */
function findBrace(glob: string): { start: number; end: number; parts: string[] } | null {
  let depth = 0;
  let start = -1;
  let inClass = false;
  let partStart = 0;
  const parts: string[] = [];
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i];
    if (ch === "\\") {
      i++;
      continue;
    }
    if (inClass) {
      if (ch === "]") inClass = false;
      continue;
    }
    if (ch === "[") inClass = true;
    else if (ch === "{") {
      if (depth === 0) {
        start = i;
        partStart = i + 1;
      }
      depth++;
    } else if (ch === "," && depth === 1) {
      parts.push(glob.slice(partStart, i));
      partStart = i + 1;
    } else if (ch === "}" && depth > 0) {
      depth--;
      if (depth === 0) {
        parts.push(glob.slice(partStart, i));
        return { start, end: i, parts };
      }
    }
  }
  return null;
}
