import type { Kind } from "../events/mod.ts";
import type { FdSensor } from "./fd_sensor.ts";
import type { ProcSensor } from "./proc_sensor.ts";
import { type Sensor, type SensorEvent, type SensorStats, StatsCounter } from "./sensor.ts";

/** One directory to watch. */
export interface WatchRoot {
  path: string;
  recursive: boolean;
}

/** The watch sensor's settings. */
export interface WatchSensorOptions {
  roots: WatchRoot[];
  tree: ProcSensor;
  fd: FdSensor;
  /** Paths (prefixes) that are Sentry's own files, never reported. */
  ignore?: string[];
  /** How far back fd evidence counts for attribution, in milliseconds. */
  evidenceMs: number;
  /** How long single halves of a rename wait for their pair, in milliseconds. */
  pairMs?: number;
  /**
   * How long an event waits before it is attributed, in milliseconds: long enough for the fd
   * sensor's next polls to see the file open (about two polling intervals).
   */
  settleMs?: number;
}

interface Pending {
  kind: "remove" | "rename";
  path: string;
  at: number;
}

/**
 * Watches the workspace and the directories the policy's deny rules name with inotify
 * (`Deno.watchFs`), for creates, modifications, deletes and renames, which polling can miss.
 * inotify does not say which process acted: an event is attributed to a pid only when exactly
 * one process of the tree had that path open recently (evidence from the fd sensor).
 * Otherwise it is recorded with `pid: null` and `detail.unattributed`, and counted.
 */
export class WatchSensor implements Sensor {
  readonly name = "watch";
  readonly #options: WatchSensorOptions;
  readonly #counter = new StatsCounter("watch");
  readonly #pending: Pending[] = [];
  readonly #settling: { kind: Kind; path: string; detail: Record<string, unknown>; at: number }[] =
    [];
  #emit: ((event: SensorEvent) => void) | null = null;

  /** Sets up the sensor. */
  constructor(options: WatchSensorOptions) {
    this.#options = options;
  }

  /** The sensor's counters. */
  stats(): SensorStats {
    return this.#counter.snapshot();
  }

  /** Watches until the signal aborts. */
  async start(emit: (event: SensorEvent) => void, signal: AbortSignal): Promise<void> {
    this.#emit = emit;
    const groups = [true, false].map((recursive) =>
      this.#options.roots.filter((r) => r.recursive === recursive).map((r) => r.path)
    );
    const watchers: Deno.FsWatcher[] = [];
    groups.forEach((paths, i) => {
      if (paths.length === 0) return;
      try {
        watchers.push(Deno.watchFs(paths, { recursive: i === 0 }));
      } catch (error) {
        this.#counter.blind(
          "watch_failed",
          `directories that could not be watched: ${paths.join(", ")} (${
            (error as Error).message
          })`,
          paths.length,
        );
      }
    });
    const flush = setInterval(
      () => {
        this.#flushPending(Date.now(), false);
        this.#flushSettled(Date.now(), false);
      },
      Math.min(this.#options.pairMs ?? 150, 50),
    );
    const stop = () => {
      for (const w of watchers) {
        try {
          w.close();
        } catch {
          // Already closed.
        }
      }
    };
    signal.addEventListener("abort", stop, { once: true });
    try {
      await Promise.all(watchers.map(async (w) => {
        for await (const event of w) this.handle(event, Date.now());
      }));
    } finally {
      clearInterval(flush);
      this.#flushPending(Date.now(), true);
      this.#flushSettled(Date.now(), true);
      this.#emit = null;
    }
  }

  /** Handles one inotify event (public so tests can feed recorded events). */
  handle(event: Deno.FsEvent, now: number): void {
    this.#counter.counters.polls++;
    if (event.flag === "rescan") {
      // The kernel queue overflowed: events were lost and we cannot know which.
      this.#counter.counters.dropped++;
      this.#counter.blind(
        "inotify_overflow",
        "inotify queue overflows: some file events were lost",
      );
      return;
    }
    const paths = event.paths.filter((p) => !this.#ignored(p));
    if (paths.length === 0) return;
    switch (event.kind) {
      case "create":
        for (const p of paths) this.#send("file.create", p, {}, now);
        break;
      case "modify":
        for (const p of paths) this.#send("file.write", p, {}, now);
        break;
      case "remove":
        for (const p of paths) this.#pending.push({ kind: "remove", path: p, at: now });
        break;
      case "rename":
        if (event.paths.length === 2) {
          const [from, to] = event.paths as [string, string];
          // A full rename: drop the halves reported before it.
          for (let i = this.#pending.length - 1; i >= 0; i--) {
            const p = this.#pending[i] as Pending;
            if (p.path === from || p.path === to) this.#pending.splice(i, 1);
          }
          this.#send("file.rename", to, { from }, now);
        } else {
          for (const p of paths) this.#pending.push({ kind: "rename", path: p, at: now });
        }
        break;
      default:
        break;
    }
  }

  #flushPending(now: number, all: boolean): void {
    const pairMs = this.#options.pairMs ?? 150;
    while (this.#pending.length > 0) {
      const p = this.#pending[0] as Pending;
      if (!all && now - p.at < pairMs) break;
      this.#pending.shift();
      if (p.kind === "remove") this.#send("file.delete", p.path, {}, p.at);
      else {
        // Half a rename: the other side is outside the watched directories.
        let exists = false;
        try {
          Deno.lstatSync(p.path);
          exists = true;
        } catch {
          exists = false;
        }
        if (exists) this.#send("file.rename", p.path, { from: null, moved: "in" }, p.at);
        else this.#send("file.delete", p.path, { moved: "out" }, p.at);
      }
    }
  }

  #ignored(path: string): boolean {
    return (this.#options.ignore ?? []).some((p) =>
      path === p || path.startsWith(p.endsWith("/") ? p : p + "/")
    );
  }

  #send(kind: Kind, path: string, detail: Record<string, unknown>, at: number): void {
    this.#settling.push({ kind, path, detail, at });
  }

  #flushSettled(now: number, all: boolean): void {
    const settleMs = this.#options.settleMs ?? 150;
    while (this.#settling.length > 0) {
      const e = this.#settling[0] as {
        kind: Kind;
        path: string;
        detail: Record<string, unknown>;
        at: number;
      };
      if (!all && now - e.at < settleMs) break;
      this.#settling.shift();
      this.#attribute(e.kind, e.path, e.detail, e.at);
    }
  }

  #attribute(kind: Kind, path: string, detail: Record<string, unknown>, at: number): void {
    // Evidence: a process of the tree had the path (or a rename's source) open around the event.
    const since = at - this.#options.evidenceMs;
    const holders = [
      ...new Set([
        ...this.#options.fd.holders(path, since),
        ...(typeof detail.from === "string" ? this.#options.fd.holders(detail.from, since) : []),
      ]),
    ];
    const pid = holders.length === 1 ? (holders[0] as number) : null;
    const member = pid === null ? undefined : this.#options.tree.members.get(pid);
    if (pid === null) {
      this.#counter.blind(
        "unattributed",
        "file events no process of the tree could be tied to (recorded with pid null)",
      );
    }
    this.#counter.counters.emitted++;
    this.#emit?.({
      ts: new Date(at).toISOString(),
      pid,
      ppid: member?.ppid ?? null,
      exe: member?.exe ?? null,
      cmdline: member?.cmdline ?? [],
      kind,
      target: path,
      detail: {
        ...detail,
        ...(pid === null
          ? { unattributed: true, ...(holders.length > 1 ? { candidates: holders } : {}) }
          : {}),
      },
      sensor: this.name,
    });
  }
}
