import {
  DEFAULT_DB_PORTS,
  type PolicyFile,
  type ProcessEntry,
  type ResolvedAccess,
  type ResolvedPolicy,
  type Rule,
} from "./schema.ts";

/** Directories users expect a rollback to leave alone: dependencies and build caches. */
export const DEFAULT_ROLLBACK_EXCLUDE = [
  "**/node_modules/**",
  "**/.venv/**",
  "**/venv/**",
  "**/__pycache__/**",
  "**/.cache/**",
  "**/.git/objects/**",
  "**/target/debug/**",
  "**/target/release/**",
  "**/.next/**",
  "**/dist/**",
  "**/build/**",
];

/** The largest protected tree, in bytes, that rollback snapshots by default: 1 GiB. */
export const DEFAULT_ROLLBACK_MAX_BYTES = 1024 * 1024 * 1024;
/** The default cap on the files and directories of one protected tree (`rollback.max_files`). */
export const DEFAULT_ROLLBACK_MAX_FILES = 200_000;

/** One policy layer as parsed, with the name it came from. */
export interface PolicyLayer {
  /** The template name or file path, for `sources`. */
  source: string;
  policy: PolicyFile;
}

/**
 * Merges policy layers, base first, into one fully resolved policy. Scalars override; lists
 * append, so a child can add to its parent's deny lists but never remove from them. A rule
 * with the same id as an inherited one replaces it. Each section's `default` is made explicit:
 * `deny` when its allow list is non-empty, unless a layer says otherwise.
 */
export function resolveLayers(layers: readonly PolicyLayer[]): ResolvedPolicy {
  const last = layers[layers.length - 1]?.policy ?? {};
  const pick = <T>(get: (p: PolicyFile) => T | undefined, fallback: T): T => {
    for (let i = layers.length - 1; i >= 0; i--) {
      const v = get((layers[i] as PolicyLayer).policy);
      if (v !== undefined) return v;
    }
    return fallback;
  };
  const all = <T>(get: (p: PolicyFile) => readonly T[] | undefined): T[] => {
    const out: T[] = [];
    for (const layer of layers) out.push(...(get(layer.policy) ?? []));
    return dedupe(out);
  };
  const access = <T>(
    get: (p: PolicyFile) =>
      | {
        default?: "allow" | "deny" | undefined;
        allow?: readonly T[] | undefined;
        deny?: readonly T[] | undefined;
      }
      | undefined,
  ): ResolvedAccess<T> => {
    const allow = all((p) => get(p)?.allow);
    const deny = all((p) => get(p)?.deny);
    const def = pick<"allow" | "deny" | undefined>((p) => get(p)?.default, undefined);
    return { default: def ?? (allow.length > 0 ? "deny" : "allow"), allow, deny };
  };

  const rules = new Map<string, Rule>();
  for (const layer of layers) {
    for (const rule of layer.policy.rules ?? []) {
      rules.delete(rule.id);
      rules.set(rule.id, {
        ...rule,
        exceptions: rule.exceptions ?? [],
        enabled: rule.enabled ?? true,
      } as Rule);
    }
  }

  const network = access((p) => p.network);
  return {
    name: last.name ?? layers[layers.length - 1]?.source ?? "policy",
    description: last.description ?? "",
    sources: layers.map((l) => l.source),
    workspace: pick((p) => p.workspace, "."),
    mode: pick((p) => p.mode, "pause"),
    block: { pause: pick((p) => p.block?.pause, false) },
    pause: {
      timeout: pick<string | null>((p) => p.pause?.timeout, null),
      on_timeout: pick((p) => p.pause?.on_timeout, "kill"),
    },
    on_sentry_exit: pick((p) => p.on_sentry_exit, "resume"),
    on_journal_error: pick((p) => p.on_journal_error, "pause"),
    thresholds: {
      alert: pick((p) => p.thresholds?.alert, 30),
      pause: pick((p) => p.thresholds?.pause, 60),
      rollback: pick((p) => p.thresholds?.rollback, 85),
      kill: pick((p) => p.thresholds?.kill, 101),
    },
    monitors: {
      files: pick((p) => p.monitors?.files, true),
      network: pick((p) => p.monitors?.network, true),
      processes: pick((p) => p.monitors?.processes, true),
      cpu: pick((p) => p.monitors?.cpu, true),
      memory: pick((p) => p.monitors?.memory, true),
      database: pick((p) => p.monitors?.database, true),
    },
    limits: {
      cpu_percent: pick((p) => p.limits?.cpu_percent, 90),
      cpu_seconds: pick((p) => p.limits?.cpu_seconds, 10),
      memory_mb: pick((p) => p.limits?.memory_mb, 2048),
    },
    files: {
      read: access((p) => p.files?.read),
      write: access((p) => p.files?.write),
      delete: access((p) => p.files?.delete),
    },
    network: { ...network, listen: pick((p) => p.network?.listen, true) },
    processes: access<ProcessEntry>((p) => p.processes),
    database: {
      // Ports replace rather than append: a layer that lists ports says which ports count.
      ports: pick((p) => p.database?.ports, DEFAULT_DB_PORTS),
      allow: all((p) => p.database?.allow),
    },
    rules: [...rules.values()],
    rollback: {
      paths: all((p) => p.rollback?.paths),
      exclude: pick((p) => p.rollback?.exclude, DEFAULT_ROLLBACK_EXCLUDE),
      max_bytes: pick((p) => p.rollback?.max_bytes, DEFAULT_ROLLBACK_MAX_BYTES),
      max_files: pick((p) => p.rollback?.max_files, DEFAULT_ROLLBACK_MAX_FILES),
      after: pick((p) => p.rollback?.after, "pause"),
    },
  };
}

function dedupe<T>(items: T[]): T[] {
  const seen = new Set<string>();
  return items.filter((item) => {
    const key = JSON.stringify(item);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}
