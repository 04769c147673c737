// deno-lint-ignore-file no-console
/**
 * Rollback's costs, against `cp -a` of the same tree in the same run.
 *
 * A generated tree (default 10,000 files and 200 MB: six large files of 4-48 MB, ten of 2 MB,
 * and small text files of 0.1-9.5 KB in about 200 directories, plus empty directories and
 * symlinks) is copied with `cp -a` and snapshotted into an empty store, alternately, `--rounds`
 * times; the table gives medians. Then, on the last store:
 *
 * - a second snapshot of the unchanged tree: its time and the bytes it adds to the store;
 * - 100 small files modified: plan (full compare, and only the changed paths as the sensors
 *   report them), then restore and verify;
 * - one large file modified in place: plan and restore;
 * - `rm -rf` of about 1,000 files: plan and restore.
 *
 * The snapshot is taken before the agent's first instruction, so the agent's start is delayed
 * by the snapshot's time: the empty-store figure for a workspace seen for the first time, the
 * unchanged-tree figure for one snapshotted before. `sync` runs (untimed) before each timed
 * step, so that no step pays for the previous one's writeback. The policy's default exclusions
 * are applied (from the coding-agent template), as `sentry run` would.
 *
 * Run: deno run -A bench/rollback_bench.ts [--quick] [--files N] [--mb N] [--rounds N] [--dir D]
 * @module
 */
import { loadPolicy } from "../src/policy/mod.ts";
import {
  formatBytes,
  openStore,
  plan,
  restore,
  snapshot,
  type SnapshotInfo,
  type Store,
} from "../src/rollback/mod.ts";

/** Options for {@link runRollbackBench}. */
export interface RollbackBenchOptions {
  /** Files in the tree; default 10,000 (2,000 with `quick`). */
  files?: number;
  /** Megabytes in the tree; default 200 (40 with `quick`). */
  megabytes?: number;
  /** Rounds of cp -a and first snapshot; default 3 (1 with `quick`). */
  rounds?: number;
  /** A small, fast run (under 30 s). */
  quick?: boolean;
  /** Where to put the temporary tree, copies and stores (one filesystem); default the temp dir. */
  dir?: string;
}

/** What {@link runRollbackBench} measured, in milliseconds and bytes. */
export interface RollbackBenchResult {
  files: number;
  treeBytes: number;
  cpMs: number;
  snapshotMs: number;
  /** `snapshotMs / cpMs`: the goal is at most 1. */
  ratio: number;
  storeBytes: number;
  secondSnapshotMs: number;
  secondSnapshotStoreBytes: number;
  planFullMs: number;
  planPathsMs: number;
  restore100Ms: number;
  largeMs: number;
  rmRfFiles: number;
  rmRfMs: number;
  allVerified: boolean;
}

const SESSION = "bench";

/** Generates the tree, runs every measurement, prints a table, and cleans up. */
export async function runRollbackBench(
  options: RollbackBenchOptions = {},
): Promise<RollbackBenchResult> {
  const quick = options.quick === true;
  const files = options.files ?? (quick ? 2_000 : 10_000);
  const megabytes = options.megabytes ?? (quick ? 40 : 200);
  const rounds = options.rounds ?? (quick ? 1 : 3);
  const policy = await loadPolicy("coding-agent");
  const exclude = policy.rollback.exclude;
  const base = Deno.makeTempDirSync({
    prefix: "sentry_rollback_bench_",
    ...(options.dir === undefined ? {} : { dir: options.dir }),
  });
  try {
    const tree = `${base}/tree`;
    const gen = generateTree(tree, files, megabytes * 1024 * 1024);
    // Files written in the last second are "racily clean" and would be hashed again by the
    // second snapshot; a real workspace is rarely that fresh.
    await sleepUntil(gen.doneAt + 1_100);

    const cp: number[] = [];
    const snap: number[] = [];
    let store: Store | undefined;
    let first: SnapshotInfo | undefined;
    for (let r = 0; r < rounds; r++) {
      const runCp = async () => {
        sync();
        cp.push(await timed(() => cpA(tree, `${base}/cp${r}`)));
      };
      const runSnap = async () => {
        sync();
        const s = openStore(`${base}/home${r}`);
        let info: SnapshotInfo | undefined;
        snap.push(
          await timed(async () => {
            info = await snapshot(s, {
              roots: [tree],
              exclude,
              maxBytes: 1 << 30,
              session: SESSION,
            });
          }),
        );
        store = s;
        first = info;
      };
      // Alternate the order, so neither always runs on the other's leftovers.
      if (r % 2 === 0) {
        await runCp();
        await runSnap();
      } else {
        await runSnap();
        await runCp();
      }
      Deno.removeSync(`${base}/cp${r}`, { recursive: true });
      if (r < rounds - 1) Deno.removeSync(`${base}/home${r}`, { recursive: true });
    }
    const s = store as Store;
    const firstInfo = first as SnapshotInfo;
    const storeBytes = duBytes(s.dir);

    // A second snapshot of the unchanged tree.
    sync();
    let second: SnapshotInfo | undefined;
    const secondMs = await timed(async () => {
      second = await snapshot(s, { roots: [tree], exclude, maxBytes: 1 << 30, session: SESSION });
    });
    const secondAdded = duBytes(s.dir) - storeBytes;

    // 100 small files modified.
    const changed = gen.small.filter((_, i) => i % Math.floor(gen.small.length / 100) === 0)
      .slice(0, 100);
    for (const path of changed) Deno.writeTextFileSync(path, `modified by the agent: ${path}\n`);
    sync();
    let full: ReturnType<typeof plan> | undefined;
    const planFullMs = await timed(() => {
      full = plan(s, { snapshot: firstInfo.id });
    });
    let hinted: ReturnType<typeof plan> | undefined;
    const planPathsMs = await timed(() => {
      hinted = plan(s, { snapshot: firstInfo.id, paths: changed });
    });
    let ok100 = false;
    const restore100Ms = await timed(async () => {
      ok100 = (await restore(s, { plan: hinted as ReturnType<typeof plan>, session: SESSION })).ok;
    });

    // One large file modified in place.
    const big = gen.large[0] as string;
    const f = Deno.openSync(big, { write: true });
    f.writeSync(new Uint8Array(1 << 20).fill(7));
    f.close();
    sync();
    let okLarge = false;
    const largeMs = await timed(async () => {
      const p = plan(s, { snapshot: firstInfo.id, paths: [big] });
      okLarge = (await restore(s, { plan: p, session: SESSION })).ok;
    });

    // rm -rf of about 1,000 files.
    const victims = gen.packages.slice(0, Math.max(1, Math.round(gen.packages.length / 10)));
    let rmFiles = 0;
    for (const dir of victims) {
      rmFiles += [...walkFiles(dir)].length;
      Deno.removeSync(dir, { recursive: true });
    }
    sync();
    let okRm = false;
    let rmActions = 0;
    const rmMs = await timed(async () => {
      const p = plan(s, { snapshot: firstInfo.id });
      rmActions = p.actions.length;
      okRm = (await restore(s, { plan: p, session: SESSION })).ok;
    });

    const cpMs = median(cp);
    const snapshotMs = median(snap);
    const ms = (v: number) => `${v.toFixed(0)} ms`;
    const vsCp = (v: number) => (v / cpMs).toFixed(2);
    const secondInfo = second as SnapshotInfo;
    console.log(
      `rollback: ${files.toLocaleString("en-US")} files, ${formatBytes(gen.bytes)} ` +
        `(${gen.large.length} large, ${gen.medium} of ${formatBytes(gen.mediumBytes)}, ${
          gen.small.length.toLocaleString("en-US")
        } small), ` +
        `${rounds} round${rounds === 1 ? "" : "s"}, medians; reflink: ${reflinkSupport(base)}`,
    );
    console.log(
      table([
        ["case", "time", "vs cp -a", "notes"],
        ["cp -a (baseline)", ms(cpMs), "1.00", spread(cp)],
        [
          "snapshot, empty store = agent start delay",
          ms(snapshotMs),
          vsCp(snapshotMs),
          `${spread(snap)}; store ${formatBytes(storeBytes)} for ${formatBytes(gen.bytes)}`,
        ],
        [
          "snapshot again, unchanged = start delay",
          ms(secondMs),
          vsCp(secondMs),
          `${secondInfo.stats.hashedFiles} files read, ${secondInfo.stats.newBlobs} blobs; ` +
          `store +${formatBytes(secondAdded)} (manifest)`,
        ],
        [
          "plan, 100 files changed, full compare",
          ms(planFullMs),
          vsCp(planFullMs),
          `${full?.actions.length} actions, ${full?.checked} paths, ${full?.hashed} hashed`,
        ],
        [
          "plan, 100 files changed, changed paths",
          ms(planPathsMs),
          vsCp(planPathsMs),
          `${hinted?.actions.length} actions, ${hinted?.checked} paths`,
        ],
        [
          "restore + verify those 100 files",
          ms(restore100Ms),
          vsCp(restore100Ms),
          `plan + restore ${ms(planPathsMs + restore100Ms)}; ok: ${ok100}`,
        ],
        [
          `plan + restore 1 large file (${formatBytes(Deno.statSync(big).size)})`,
          ms(largeMs),
          vsCp(largeMs),
          `ok: ${okLarge}`,
        ],
        [
          `plan + restore after rm -rf of ${rmFiles.toLocaleString("en-US")} files`,
          ms(rmMs),
          vsCp(rmMs),
          `${rmActions} actions, full compare; ok: ${okRm}`,
        ],
      ]),
    );
    return {
      files,
      treeBytes: gen.bytes,
      cpMs,
      snapshotMs,
      ratio: snapshotMs / cpMs,
      storeBytes,
      secondSnapshotMs: secondMs,
      secondSnapshotStoreBytes: secondAdded,
      planFullMs,
      planPathsMs,
      restore100Ms,
      largeMs,
      rmRfFiles: rmFiles,
      rmRfMs: rmMs,
      allVerified: ok100 && okLarge && okRm,
    };
  } finally {
    Deno.removeSync(base, { recursive: true });
  }
}

/** The generated tree's parts. */
interface Generated {
  bytes: number;
  large: string[];
  medium: number;
  mediumBytes: number;
  small: string[];
  /** Top-level package directories, each with a tenth of the small files or so. */
  packages: string[];
  doneAt: number;
}

/** Writes the tree: deterministic sizes, content unique per file (nothing deduplicates). */
function generateTree(root: string, files: number, totalBytes: number): Generated {
  const random = (size: number) => {
    const out = new Uint8Array(size);
    for (let o = 0; o < size; o += 65_536) crypto.getRandomValues(out.subarray(o, o + 65_536));
    return out;
  };
  const large: string[] = [];
  let bytes = 0;
  Deno.mkdirSync(`${root}/assets/media`, { recursive: true });
  for (const [i, share] of [0.24, 0.16, 0.12, 0.08, 0.04, 0.02].entries()) {
    const path = `${root}/assets/media/clip${i}.bin`;
    const size = Math.round(totalBytes * share);
    Deno.writeFileSync(path, random(size));
    large.push(path);
    bytes += size;
  }
  const medium = Math.min(10, Math.max(0, files - 6));
  for (let i = 0; i < medium; i++) {
    const size = Math.round(totalBytes * 0.01);
    Deno.writeFileSync(`${root}/assets/tex${i}.dat`, random(size));
    bytes += size;
  }
  const smallCount = Math.max(0, files - large.length - medium);
  const mean = Math.max(200, Math.floor((totalBytes - bytes) / Math.max(1, smallCount)));
  const pool = new TextEncoder().encode(
    Array.from({ length: 4_000 }, (_, i) => `const value${i} = compute(${i * 7919 % 10007});\n`)
      .join(""),
  );
  const small: string[] = [];
  const packages = new Set<string>();
  const made = new Set<string>();
  const header = new TextEncoder();
  for (let i = 0; i < smallCount; i++) {
    const pkg = `${root}/src/pkg${i % 10}`;
    const dir = `${pkg}/mod${i % 200}`;
    if (!made.has(dir)) {
      Deno.mkdirSync(dir, { recursive: true });
      made.add(dir);
      packages.add(pkg);
    }
    const size = 100 + ((i * 2_654_435_761) >>> 0) % (2 * mean - 200);
    const head = header.encode(`// file ${i}\n`);
    const data = new Uint8Array(size);
    data.set(head.subarray(0, size));
    if (size > head.length) {
      const start = (i * 977) % (pool.length - size);
      data.set(pool.subarray(start, start + size - head.length), head.length);
    }
    const path = `${dir}/f${i}.ts`;
    Deno.writeFileSync(path, data);
    small.push(path);
    bytes += size;
  }
  for (let i = 0; i < 20; i++) Deno.mkdirSync(`${root}/empty/e${i}`, { recursive: true });
  for (let i = 0; i < 20; i++) Deno.symlinkSync(`../src/pkg${i % 10}`, `${root}/assets/link${i}`);
  return {
    bytes,
    large,
    medium,
    mediumBytes: Math.round(totalBytes * 0.01),
    small,
    packages: [...packages].sort(),
    doneAt: Date.now(),
  };
}

function* walkFiles(dir: string): Generator<string> {
  for (const e of Deno.readDirSync(dir)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) yield* walkFiles(p);
    else yield p;
  }
}

async function cpA(src: string, dst: string): Promise<void> {
  const out = await new Deno.Command("cp", { args: ["-a", src, dst], stderr: "piped" }).output();
  if (!out.success) throw new Error(`cp -a failed: ${new TextDecoder().decode(out.stderr)}`);
}

/** Flushes dirty pages, so that the next timed step does not pay for earlier writes. */
function sync(): void {
  new Deno.Command("sync").outputSync();
}

/** Whether `cp --reflink=always` works where the bench runs. */
function reflinkSupport(dir: string): string {
  Deno.writeTextFileSync(`${dir}/reflink_a`, "x");
  const out = new Deno.Command("cp", {
    args: ["--reflink=always", `${dir}/reflink_a`, `${dir}/reflink_b`],
    stderr: "null",
  }).outputSync();
  return out.success ? "supported" : "not supported";
}

async function timed(fn: () => unknown): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

async function sleepUntil(at: number): Promise<void> {
  const wait = at - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1
    ? sorted[mid] as number
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

function spread(values: readonly number[]): string {
  if (values.length < 2) return "1 run";
  return `${values.length} runs: ${values.map((v) => v.toFixed(0)).join(", ")} ms`;
}

/** The bytes of the files under a directory. */
function duBytes(dir: string): number {
  let total = 0;
  for (const e of Deno.readDirSync(dir)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) total += duBytes(p);
    else if (e.isFile) total += Deno.lstatSync(p).size;
  }
  return total;
}

/** Formats rows: the first column left-aligned, the others right-aligned but the last. */
function table(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((c, i) => widths[i] = Math.max(widths[i] ?? 0, c.length));
  return rows.map((row) =>
    row.map((c, i) =>
      i === 0 || i === row.length - 1 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0)
    ).join("  ").trimEnd()
  ).join("\n");
}

function parseArgs(args: readonly string[]): RollbackBenchOptions {
  const out: RollbackBenchOptions = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg === "--quick") {
      out.quick = true;
      continue;
    }
    const dir = /^--dir(?:=(.*))?$/.exec(arg);
    if (dir !== null) {
      out.dir = dir[1] ?? args[++i] ?? "";
      continue;
    }
    const m = /^--(files|mb|rounds)(?:=(.*))?$/.exec(arg);
    if (m === null) throw new TypeError(`Unknown argument "${arg}"`);
    const value = Number(m[2] ?? args[++i]);
    if (!Number.isInteger(value) || value <= 0) {
      throw new TypeError(`Invalid value for "--${m[1]}": give a positive integer`);
    }
    if (m[1] === "files") out.files = value;
    else if (m[1] === "mb") out.megabytes = value;
    else out.rounds = value;
  }
  return out;
}

if (import.meta.main) {
  await runRollbackBench(parseArgs(Deno.args));
}
