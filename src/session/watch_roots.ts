import picomatch from "picomatch";
import type { CompiledPolicy } from "../policy/mod.ts";
import type { WatchRoot } from "../sensors/mod.ts";

/** How watch roots are chosen. */
export interface WatchRootOptions {
  /** Paths never watched (Sentry's own data). */
  ignore: string[];
  /** The most directories one root may hold and still be watched recursively. */
  maxDirs?: number;
  /** Tells whether a path is an existing directory; injectable for tests. */
  isDir?: (path: string) => boolean;
  /** Counts directories under a path, stopping at `limit`; injectable for tests. */
  countDirs?: (path: string, limit: number) => number;
}

/**
 * The directories the watch sensor covers: the workspace, recursively, and the static prefix of
 * every deny glob (`~/.ssh` for `~/.ssh/**`, `/etc` for `/etc/cron.d/*`). A prefix that does not
 * exist yet is covered by watching its nearest existing parent, shallowly, so its creation is
 * seen. A root with more than `maxDirs` directories (such as `/usr`) is watched shallowly too.
 */
export function watchRoots(policy: CompiledPolicy, options: WatchRootOptions): WatchRoot[] {
  const isDir = options.isDir ?? defaultIsDir;
  const countDirs = options.countDirs ?? defaultCountDirs;
  const maxDirs = options.maxDirs ?? 2000;
  const bases = new Set<string>();
  const globs = [
    ...policy.files.read.deny.globs,
    ...policy.files.write.deny.globs,
    ...policy.files.delete.deny.globs,
    ...policy.ruleFileGlobs,
  ];
  for (const glob of globs) {
    const scan = picomatch.scan(glob);
    const base = (scan.isGlob ? scan.base : glob).replace(/\/+$/, "");
    if (base.startsWith("/") && base.length > 1) bases.add(base);
  }
  const roots = new Map<string, boolean>();
  roots.set(policy.workspace, true);
  for (const base of bases) {
    if (isPseudo(base)) continue;
    if (isDir(base)) {
      roots.set(base, roots.get(base) === true || countDirs(base, maxDirs + 1) <= maxDirs);
      continue;
    }
    // A file, or a path that does not exist yet: watch the nearest existing directory above.
    let parent = base.slice(0, base.lastIndexOf("/")) || "/";
    while (parent !== "/" && !isDir(parent)) {
      parent = parent.slice(0, parent.lastIndexOf("/")) || "/";
    }
    if (parent !== "/" && !roots.has(parent)) roots.set(parent, false);
  }
  const ignored = (p: string) =>
    options.ignore.some((i) => p === i || p.startsWith(i + "/")) || isPseudo(p);
  const out: WatchRoot[] = [];
  for (const [path, recursive] of roots) {
    if (ignored(path)) continue;
    // A root inside another recursive root is already covered.
    const covered = [...roots].some(([other, rec]) =>
      rec && other !== path && path.startsWith(other + "/")
    );
    if (!covered) out.push({ path, recursive });
  }
  return out;
}

/**
 * Kernel pseudo-filesystems: inotify reports nothing for them, and walking them to add watches
 * costs seconds of CPU. Their deny rules are enforced on what the fd sensor sees instead.
 */
const PSEUDO = ["/proc", "/sys", "/dev"];

function isPseudo(path: string): boolean {
  if (path === "/dev/shm" || path.startsWith("/dev/shm/")) return false;
  return PSEUDO.some((p) => path === p || path.startsWith(p + "/"));
}

function defaultIsDir(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}

function defaultCountDirs(path: string, limit: number): number {
  let count = 0;
  const stack = [path];
  while (stack.length > 0 && count < limit) {
    const dir = stack.pop() as string;
    count++;
    try {
      for (const entry of Deno.readDirSync(dir)) {
        if (entry.isDirectory) stack.push(`${dir}/${entry.name}`);
      }
    } catch {
      // Unreadable: it cannot be watched below anyway.
    }
  }
  return count;
}
