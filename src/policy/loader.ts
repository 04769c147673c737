import YAML, { isMap, isPair, isScalar, LineCounter, type Node } from "yaml";
import type { z } from "zod";
import { compileMatch, compileProcess } from "./compile.ts";
import { formatFieldPath, PolicyError } from "./errors.ts";
import { checkGlobSyntax, expandGlob, normalizePath, parseNetworkEntry } from "./patterns.ts";
import { type PolicyLayer, resolveLayers } from "./resolve.ts";
import { PolicyFile, type ProcessEntry, type ResolvedPolicy, type RuleMatch } from "./schema.ts";
import { requireSentryVersion } from "./versions.ts";

/** The built-in templates, shipped as YAML in `policies/`. `default` is the root of all. */
export const TEMPLATES = [
  "default",
  "coding-agent",
  "data-pipeline",
  "customer-support",
  "research-agent",
  "hipaa-agent",
  "strict",
] as const;

/** How a policy is read. Injectable so tests can load from memory. */
export interface LoadOptions {
  /** Reads a file as text; defaults to `Deno.readTextFile`. */
  readFile?: (path: string) => Promise<string>;
  /** Directory for relative paths; defaults to the current directory. */
  cwd?: string;
  /**
   * The environment the policy compiles in: when given, every `${VAR}` its globs name must be
   * set (see {@link ParseOptions}), and an unset one is an error at its line and column.
   */
  env?: Readonly<Record<string, string>>;
}

const TEMPLATE_DIR = new URL("../../policies/", import.meta.url);

/** Tells whether a reference names a built-in template rather than a file. */
export function isTemplateName(ref: string): boolean {
  return (TEMPLATES as readonly string[]).includes(ref);
}

/** Reads a built-in template's YAML text. */
export function readTemplate(name: string): Promise<string> {
  return Deno.readTextFile(new URL(`${name}.yaml`, TEMPLATE_DIR));
}

/**
 * Loads a policy by template name or file path, follows its `extends` chain (a policy that
 * names no parent extends `default`; `extends: none` opts out), validates every layer, and
 * merges them into a fully resolved policy. Throws a {@link PolicyError} whose message names the
 * file, line, column and field.
 */
export async function loadPolicy(ref: string, options: LoadOptions = {}): Promise<ResolvedPolicy> {
  const layers = await loadPolicyLayers(ref, options);
  const resolved = resolveLayers(layers);
  checkMergedThresholds(layers, resolved);
  return resolved;
}

/**
 * Checks the thresholds' order once `extends` is merged: a file may set `alert: 70` alone and be
 * in order by itself, yet above its parent's `pause: 60`. The error points at the later file's
 * key that breaks the order.
 */
function checkMergedThresholds(layers: readonly SourcedLayer[], resolved: ResolvedPolicy): void {
  const t = resolved.thresholds;
  for (let i = 1; i < THRESHOLD_ORDER.length; i++) {
    const [low, high] = [THRESHOLD_ORDER[i - 1], THRESHOLD_ORDER[i]] as [
      typeof THRESHOLD_ORDER[number],
      typeof THRESHOLD_ORDER[number],
    ];
    if (t[high] >= t[low]) continue;
    // The layer that set either of the two last is the one that broke the order.
    const culprit = [...layers].reverse().find((l) =>
      l.policy.thresholds?.[low] !== undefined || l.policy.thresholds?.[high] !== undefined
    );
    const key = culprit?.policy.thresholds?.[high] !== undefined ? high : low;
    const file = culprit?.source ?? "policy";
    let where = file;
    let place: { line?: number; column?: number } = {};
    if (culprit !== undefined) {
      const lineCounter = new LineCounter();
      const doc = YAML.parseDocument(culprit.text, { lineCounter });
      const offset = offsetOf(doc.contents, ["thresholds", key]);
      if (offset !== undefined) {
        const { line, col } = lineCounter.linePos(offset);
        where = `${file}:${line}:${col}`;
        place = { line, column: col };
      }
    }
    throw new PolicyError(
      `Invalid policy at ${where}: field "thresholds.${key}": with what it extends, ` +
        `thresholds.${high} (${t[high]}) is below thresholds.${low} (${t[low]}); ` +
        "thresholds go up: alert, pause, rollback, kill",
      { file, field: `thresholds.${key}`, ...place },
    );
  }
}

/** One layer of a policy's `extends` chain as read, with its text, for `sentry explain`. */
export interface SourcedLayer extends PolicyLayer {
  /** The file read, absolute, or null for a built-in template. */
  path: string | null;
  /** The YAML text, so that entries can be traced to their lines. */
  text: string;
}

/**
 * Reads and validates the layers of a policy's `extends` chain, base first, keeping each
 * layer's text and file: what {@link loadPolicy} merges, and what `sentry explain` traces each
 * entry back to. Throws a {@link PolicyError} as {@link loadPolicy} does.
 */
export async function loadPolicyLayers(
  ref: string,
  options: LoadOptions = {},
): Promise<SourcedLayer[]> {
  const layers: SourcedLayer[] = [];
  // Keyed by resolved path: the same relative text can name different files along a chain.
  const seen = new Set<string>();
  let next: string | null = ref;
  let cwd = options.cwd ?? Deno.cwd();
  while (next !== null) {
    const { source, key, text, dir } = await readPolicyText(next, { ...options, cwd });
    if (seen.has(key)) {
      throw new PolicyError(
        `Cannot load policy "${ref}": "extends" forms a cycle through "${source}"`,
        {
          file: source,
          field: "extends",
        },
      );
    }
    seen.add(key);
    const policy = parsePolicy(text, source, options.env === undefined ? {} : { env: options.env });
    layers.unshift({ source, policy, text, path: key.startsWith("template:") ? null : key });
    const parent = policy.extends ?? (source === "default" ? "none" : "default");
    next = parent === "none" ? null : parent;
    cwd = dir;
  }
  return layers;
}

async function readPolicyText(
  ref: string,
  options: LoadOptions & { cwd: string },
): Promise<{ source: string; key: string; text: string; dir: string }> {
  if (isTemplateName(ref)) {
    return { source: ref, key: `template:${ref}`, text: await readTemplate(ref), dir: options.cwd };
  }
  const looksLikeFile = ref.includes("/") || /\.ya?ml$/i.test(ref);
  if (!looksLikeFile) {
    throw new PolicyError(
      `Unknown policy template "${ref}": choose one of ${
        TEMPLATES.join(", ")
      }, or give a file path`,
      { file: ref },
    );
  }
  const path = normalizePath(ref.startsWith("/") ? ref : `${options.cwd}/${ref}`);
  const read = options.readFile ?? Deno.readTextFile;
  try {
    const text = await read(path);
    return { source: ref, key: path, text, dir: path.slice(0, path.lastIndexOf("/")) || "/" };
  } catch (error) {
    throw new PolicyError(`Cannot read policy "${ref}": ${readFailure(error)}`, {
      file: ref,
      cause: error,
    });
  }
}

/** One problem of a policy file, with where it is. */
export interface PolicyProblem {
  /** The whole one-line message: `Invalid policy at FILE:LINE:COL: reason`. */
  message: string;
  line?: number;
  column?: number;
  field?: string;
  /** The parser's own error, for a YAML syntax problem. */
  cause?: unknown;
}

/** What {@link parsePolicy} checks besides the text. */
export interface ParseOptions {
  /**
   * The environment the policy will compile in: when given, a `${VAR}` a glob names that is
   * neither `WORKSPACE`, `HOME` nor set here is an error at its line and column.
   */
  env?: Readonly<Record<string, string>>;
}

/**
 * Parses and validates one policy file's text: its characters (no control characters), YAML
 * syntax, the strict schema (unknown keys are errors), then every glob, network entry, process
 * entry and rule, the order of the thresholds and, given an environment, the variables. Every
 * problem is gathered: the {@link PolicyError} thrown shows the first and lists all in
 * `problems`, each with its `file:line:col` and dotted field path.
 */
export function parsePolicy(text: string, file: string, options: ParseOptions = {}): PolicyFile {
  const lineCounter = new LineCounter();
  const problems: PolicyProblem[] = [];
  const finish = () => {
    // In the order of the file, so that the first shown is the first to fix.
    problems.sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0));
    const first = problems[0];
    if (first === undefined) return;
    const more = problems.length - 1;
    const suffix = more > 0 ? ` (and ${more} more ${more === 1 ? "problem" : "problems"})` : "";
    throw new PolicyError(first.message + suffix, {
      file,
      ...(first.line === undefined ? {} : { line: first.line }),
      ...(first.column === undefined ? {} : { column: first.column }),
      ...(first.field === undefined ? {} : { field: first.field }),
      ...(first.cause === undefined ? {} : { cause: first.cause }),
      problems,
    });
  };
  const control = controlCharacters(text);
  for (const { offset, code } of control) {
    const { line, col } = positionOf(text, offset);
    problems.push({
      message: `Invalid policy at ${file}:${line}:${col}: ${
        code === 0xfffd
          ? "the text is not valid UTF-8"
          : `control character U+${code.toString(16).toUpperCase().padStart(4, "0")}`
      }`,
      line,
      column: col,
    });
  }
  finish();
  const doc = YAML.parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false });
  const where = (offset: number | undefined) => {
    if (offset === undefined) return `${file}`;
    const { line, col } = lineCounter.linePos(offset);
    return `${file}:${line}:${col}`;
  };
  const locate = (offset: number | undefined) =>
    offset === undefined
      ? {}
      : { line: lineCounter.linePos(offset).line, column: lineCounter.linePos(offset).col };
  for (const yamlError of doc.errors) {
    const offset = yamlError.pos[0];
    const reason = yamlError.message.split("\n")[0]?.replace(/ at line \d+, column \d+:?$/, "") ??
      "";
    problems.push({
      message: `Invalid YAML at ${where(offset)}: ${reason}`,
      ...locate(offset),
      cause: yamlError,
    });
  }
  finish();
  const data = doc.toJS() ?? {};
  const fail = (path: PropertyKey[], reason: string, keyOnly = false): void => {
    const offset = offsetOf(doc.contents, path, { keyOnly });
    problems.push({
      message: `Invalid policy at ${where(offset)}: ${reason}`,
      field: formatFieldPath(path),
      ...locate(offset),
    });
  };
  if (typeof data !== "object" || Array.isArray(data)) {
    fail([], "a policy must be a mapping of keys to values");
    finish();
  }
  // A policy for a newer Sentry may use keys this one does not know: say that, not them.
  requireSentryVersion(data, fail);
  finish();
  const parsed = PolicyFile.safeParse(data);
  if (!parsed.success) {
    for (const issue of parsed.error.issues as z.core.$ZodIssue[]) {
      if (issue.code === "unrecognized_keys") {
        for (const key of issue.keys) {
          const path = [...issue.path, key];
          fail(path, `unknown key "${formatFieldPath(path)}"`, true);
        }
        continue;
      }
      const field = formatFieldPath(issue.path);
      const value = valueAt(data, issue.path);
      const shown = value === undefined || typeof value === "object"
        ? ""
        : ` (got ${JSON.stringify(value)})`;
      const message = issue.message.replace(/^Invalid input: /, "");
      fail(
        issue.path,
        `field "${field}": ${message.charAt(0).toLowerCase()}${message.slice(1)}${shown}`,
      );
    }
    finish();
  }
  const policy = parsed.data as PolicyFile;
  checkPatterns(policy, fail);
  checkThresholds(policy, fail);
  if (options.env !== undefined) checkVariables(policy, { env: options.env, fail });
  finish();
  return policy;
}

/** The control characters of a text (tab, line feed and carriage return aside) and U+FFFD. */
function controlCharacters(text: string): { offset: number; code: number }[] {
  const out: { offset: number; code: number }[] = [];
  // deno-lint-ignore no-control-regex
  const re = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd]/g;
  let last = -2;
  for (const m of text.matchAll(re)) {
    // A run of bad bytes is one problem.
    const adjacent = m.index === last + 1;
    last = m.index;
    if (adjacent) continue;
    out.push({ offset: m.index, code: m[0].charCodeAt(0) });
    if (out.length >= 20) break;
  }
  return out;
}

/** The 1-based line and column of an offset in a text. */
function positionOf(text: string, offset: number): { line: number; col: number } {
  const before = text.slice(0, offset);
  const line = before.split("\n").length;
  return { line, col: offset - (before.lastIndexOf("\n") + 1) + 1 };
}

type Fail = (path: PropertyKey[], reason: string) => void;

/** The thresholds, least to most drastic: each must be at least the one before it. */
const THRESHOLD_ORDER = ["alert", "pause", "rollback", "kill"] as const;

/** Checks that the thresholds a file sets are in order: alert ≤ pause ≤ rollback ≤ kill. */
function checkThresholds(policy: PolicyFile, fail: Fail): void {
  const t = policy.thresholds;
  if (t === undefined) return;
  let before: { key: string; value: number } | null = null;
  for (const key of THRESHOLD_ORDER) {
    const value = t[key];
    if (value === undefined) continue;
    if (before !== null && value < before.value) {
      fail(
        ["thresholds", key],
        `field "thresholds.${key}": ${value} is below thresholds.${before.key} (${before.value}); ` +
          "thresholds go up: alert, pause, rollback, kill",
      );
    }
    if (before === null || value >= before.value) before = { key, value };
  }
}

/** What {@link checkVariables} needs. */
interface VariableCheck {
  env: Readonly<Record<string, string>>;
  fail: Fail;
}

/**
 * Checks that every variable (`${VAR}` or `$VAR`) the globs name is set, as the compiler will
 * expand them: the same expansion, with a stand-in workspace and home (those are always set).
 */
function checkVariables(policy: PolicyFile, { env, fail }: VariableCheck): void {
  const context = { home: "/home/probe", workspace: "/workspace/probe", env };
  const check = (path: PropertyKey[], fn: () => unknown) => {
    try {
      fn();
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      // Only the variables: every other problem of the glob is checkPatterns' to report.
      if (/^Unset variable/.test(message)) {
        fail(path, `field "${formatFieldPath(path)}": ${message.replace(/^U/, "u")}`);
      }
    }
  };
  for (const op of ["read", "write", "delete"] as const) {
    for (const list of ["allow", "deny"] as const) {
      policy.files?.[op]?.[list]?.forEach((g, i) =>
        check(["files", op, list, i], () => expandGlob(g, context))
      );
    }
  }
  for (const field of ["paths", "exclude"] as const) {
    policy.rollback?.[field]?.forEach((g, i) =>
      check(["rollback", field, i], () => expandGlob(g, context))
    );
  }
  for (const list of ["allow", "deny"] as const) {
    policy.processes?.[list]?.forEach((e, i) =>
      check(["processes", list, i], () => compileProcess(e, context))
    );
  }
  policy.rules?.forEach((rule, i) => {
    const matches: [PropertyKey[], RuleMatch][] = [
      [["rules", i, "match"], rule.match],
      ...(rule.exceptions ?? []).map((m, j): [PropertyKey[], RuleMatch] => [
        ["rules", i, "exceptions", j],
        m,
      ]),
    ];
    for (const [path, match] of matches) {
      if (match.target === undefined) continue;
      check(
        [...path, "target"],
        () => compileMatch({ kind: match.kind, target: match.target }, context),
      );
    }
  });
}

/** Checks the globs of a process entry (names and paths) for balanced brackets and braces. */
function checkProcessGlobs(entry: ProcessEntry): void {
  if (typeof entry === "string") return checkGlobSyntax(entry);
  if (entry.name !== undefined) checkGlobSyntax(entry.name);
  if (entry.path !== undefined) checkGlobSyntax(entry.path);
}

/** Checks what the schema cannot: glob syntax, network entries, regexes and rule kinds. */
function checkPatterns(policy: PolicyFile, fail: Fail): void {
  const guard = (path: PropertyKey[], fn: () => unknown) => {
    try {
      fn();
    } catch (error) {
      fail(
        path,
        `field "${formatFieldPath(path)}": ${
          error instanceof Error ? error.message : String(error)
        }`,
      );
    }
  };
  for (const op of ["read", "write", "delete"] as const) {
    for (const list of ["allow", "deny"] as const) {
      policy.files?.[op]?.[list]?.forEach((glob, i) =>
        guard(["files", op, list, i], () => checkPathGlob(glob))
      );
    }
  }
  for (const list of ["allow", "deny"] as const) {
    policy.network?.[list]?.forEach((e, i) =>
      guard(["network", list, i], () => parseNetworkEntry(e))
    );
    policy.processes?.[list]?.forEach((e, i) =>
      guard(["processes", list, i], () => {
        compileProcess(e);
        checkProcessGlobs(e);
      })
    );
  }
  policy.database?.allow?.forEach((e, i) =>
    guard(["database", "allow", i], () => parseNetworkEntry(e))
  );
  const probe = {
    home: "/home/probe",
    workspace: "/workspace/probe",
    env: new Proxy({}, { get: () => "/probe" }),
  };
  // Field by field, so that an error points at the kind, target or process that is wrong.
  const checkMatch = (path: PropertyKey[], match: RuleMatch) => {
    for (const field of ["kind", "target", "process"] as const) {
      if (match[field] === undefined) continue;
      guard(
        [...path, field],
        () => compileMatch({ kind: match.kind, [field]: match[field] }, probe),
      );
    }
  };
  policy.rules?.forEach((rule, i) => {
    checkMatch(["rules", i, "match"], rule.match);
    rule.exceptions?.forEach((m, j) => checkMatch(["rules", i, "exceptions", j], m));
  });
  const ids = new Set<string>();
  policy.rules?.forEach((rule, i) => {
    if (ids.has(rule.id)) {
      fail(["rules", i, "id"], `field "rules[${i}].id": duplicate rule id "${rule.id}"`);
    }
    ids.add(rule.id);
  });
  for (const field of ["paths", "exclude"] as const) {
    policy.rollback?.[field]?.forEach((g, i) =>
      guard(["rollback", field, i], () => checkGlobSyntax(g))
    );
  }
}

/** Checks a path glob's form without expanding it (variables are checked at compile time). */
function checkPathGlob(glob: string): void {
  checkGlobSyntax(glob);
  if (!/^(?:\/|~|\$|\*\*)/.test(glob)) {
    throw new RangeError(
      `Bad glob "${glob}": a path glob must be absolute or start with ~, \${WORKSPACE}, \${HOME} or **`,
    );
  }
}

/** The value at a path in parsed data, or undefined when the path does not exist. */
export function valueAt(data: unknown, path: readonly PropertyKey[]): unknown {
  let cur: unknown = data;
  for (const key of path) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[key];
  }
  return cur;
}

/**
 * The source offset of the node at a path (or, with `keyOnly`, of its key), or of its nearest
 * existing ancestor. Shared with the config loader so that both report `file:line:col` alike.
 */
export function offsetOf(
  root: unknown,
  path: readonly PropertyKey[],
  { keyOnly = false }: { keyOnly?: boolean } = {},
): number | undefined {
  let node = root as Node | null | undefined;
  let best = (node as Node | undefined)?.range?.[0];
  for (let i = 0; i < path.length; i++) {
    const key = path[i];
    if (node === null || node === undefined) break;
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && p.key.value === key);
      if (pair === undefined) break;
      const keyNode = pair.key as Node;
      if (keyOnly && i === path.length - 1) return keyNode.range?.[0];
      best = (pair.value as Node | null)?.range?.[0] ?? keyNode.range?.[0] ?? best;
      node = pair.value as Node | null;
    } else if (
      "items" in node && Array.isArray((node as { items: unknown[] }).items) &&
      typeof key === "number"
    ) {
      const item = (node as { items: unknown[] }).items[key] as Node | undefined;
      if (item === undefined) break;
      best = item.range?.[0] ?? best;
      node = item;
    } else {
      break;
    }
  }
  return best;
}

/** Why a file could not be read, in a few words: "no such file", "permission denied"... */
export function readFailure(error: unknown): string {
  return error instanceof Deno.errors.NotFound
    ? "no such file"
    : error instanceof Deno.errors.PermissionDenied
    ? "permission denied"
    : error instanceof Deno.errors.IsADirectory
    ? "it is a directory"
    : error instanceof Error
    ? error.message
    : String(error);
}
