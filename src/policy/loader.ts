import YAML, { isMap, isPair, isScalar, LineCounter, type Node } from "yaml";
import type { z } from "zod";
import { compileMatch, compileProcess } from "./compile.ts";
import { formatFieldPath, PolicyError } from "./errors.ts";
import { checkGlobSyntax, normalizePath, parseNetworkEntry } from "./patterns.ts";
import { type PolicyLayer, resolveLayers } from "./resolve.ts";
import { PolicyFile, type ResolvedPolicy, type RuleMatch } from "./schema.ts";

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
  const layers: PolicyLayer[] = [];
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
    const policy = parsePolicy(text, source);
    layers.unshift({ source, policy });
    const parent = policy.extends ?? (source === "default" ? "none" : "default");
    next = parent === "none" ? null : parent;
    cwd = dir;
  }
  return resolveLayers(layers);
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

/**
 * Parses and validates one policy file's text: YAML syntax, the strict schema (unknown keys
 * are errors), then every glob, network entry, process entry and rule. Errors carry the
 * `file:line:col` and the dotted field path.
 */
export function parsePolicy(text: string, file: string): PolicyFile {
  const lineCounter = new LineCounter();
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
  const yamlError = doc.errors[0];
  if (yamlError !== undefined) {
    const offset = yamlError.pos[0];
    const reason = yamlError.message.split("\n")[0]?.replace(/ at line \d+, column \d+:?$/, "") ??
      "";
    throw new PolicyError(`Invalid YAML at ${where(offset)}: ${reason}`, {
      file,
      ...locate(offset),
      cause: yamlError,
    });
  }
  const data = doc.toJS() ?? {};
  const fail = (path: PropertyKey[], reason: string, keyOnly = false): never => {
    const offset = offsetOf(doc.contents, path, { keyOnly });
    const field = formatFieldPath(path);
    throw new PolicyError(`Invalid policy at ${where(offset)}: ${reason}`, {
      file,
      field,
      ...locate(offset),
    });
  };
  if (typeof data !== "object" || Array.isArray(data)) {
    fail([], "a policy must be a mapping of keys to values");
  }
  const parsed = PolicyFile.safeParse(data);
  if (!parsed.success) {
    const issue = parsed.error.issues[0] as z.core.$ZodIssue;
    const more = parsed.error.issues.length - 1;
    const suffix = more > 0 ? ` (and ${more} more ${more === 1 ? "problem" : "problems"})` : "";
    if (issue.code === "unrecognized_keys") {
      const key = issue.keys[0] as string;
      const path = [...issue.path, key];
      fail(path, `unknown key "${formatFieldPath(path)}"${suffix}`, true);
    }
    const field = formatFieldPath(issue.path);
    const value = valueAt(data, issue.path);
    const shown = value === undefined || typeof value === "object"
      ? ""
      : ` (got ${JSON.stringify(value)})`;
    const message = issue.message.replace(/^Invalid input: /, "");
    fail(
      issue.path,
      `field "${field}": ${message.charAt(0).toLowerCase()}${message.slice(1)}${shown}${suffix}`,
    );
  }
  const policy = parsed.data as PolicyFile;
  checkPatterns(policy, fail);
  return policy;
}

type Fail = (path: PropertyKey[], reason: string) => never;

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
      guard(["processes", list, i], () => compileProcess(e))
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
