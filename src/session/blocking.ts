/**
 * What Sentry can block before it happens on a host, by command (`run` or `attach`) and
 * privilege (root or not), for `sentry doctor`: for each kind of action, the mechanism that
 * refuses it, or what happens instead (the policy's next response, a pause). Pure: the host's
 * abilities come in as {@link HostAbilities}.
 *
 * @module
 */

/** What the host offers, as probed. */
export interface HostAbilities {
  /** Whether `doctor` itself runs as root (root rows are probed only then). */
  root: boolean;
  /** seccomp user notification (the seccomp tier). */
  seccomp: boolean;
  /** The Landlock ABI, 0 when there is none. */
  landlockAbi: number;
  /** fanotify permission events (root). */
  fanotifyPermission: boolean;
  /** The eBPF tier loads (root): the cgroup connect programs load the same way. */
  ebpf: boolean;
  /** cgroup v2 is mounted (the connect guard attaches to the session's v2 directory). */
  cgroupV2: boolean;
}

/** The action kinds of the table, in column order. */
export const BLOCK_COLUMNS = [
  "open (read, write)",
  "delete, rename",
  "exec",
  "connect",
  "Sentry's files",
  "signal, trace Sentry",
] as const;

/** One row: a command and privilege, with a cell per column. */
export interface BlockingRow {
  command: "run" | "attach";
  root: boolean;
  /** One per {@link BLOCK_COLUMNS} entry: the mechanism, or "no: ..." with what happens. */
  cells: string[];
  /** True when the row needs root and doctor did not run as root: the cells are not probed. */
  unprobed: boolean;
}

const PAUSE = "no: pauses instead";

/** The four rows for a host. */
export function blockingMatrix(host: HostAbilities): BlockingRow[] {
  const landlock = host.landlockAbi >= 1;
  const scope = host.landlockAbi >= 6;
  const wall = (what: string) => (landlock ? `Landlock (${what})` : null);
  const join = (...parts: (string | null)[]) => {
    const kept = parts.filter((p): p is string => p !== null);
    return kept.length === 0 ? PAUSE : kept.join(" + ");
  };
  const userRun: string[] = host.seccomp
    ? [
      join("seccomp (Sentry opens)", wall("deny lists")),
      join("seccomp", wall("deny lists")),
      join("seccomp", wall("denied binaries")),
      landlock ? "seccomp (Sentry connects) + Landlock (TCP ports)" : "seccomp (Sentry connects)",
      join("seccomp (every mode)", wall("mode block")),
      scope ? "Landlock scope + seccomp" : "seccomp",
    ]
    : [
      join(wall("deny lists, mode block")),
      join(wall("deny lists, mode block")),
      join(wall("denied binaries, mode block")),
      host.landlockAbi >= 4 ? "Landlock (TCP ports, mode block)" : PAUSE,
      landlock ? "Landlock (mode block only)" : "no: readable by the agent",
      scope ? "Landlock scope" : "no",
    ];
  const rootProbed = host.root;
  const fan = host.fanotifyPermission;
  const connect = host.ebpf && host.cgroupV2;
  const rootRun = [
    join(wall("deny lists"), fan ? "fanotify guard" : null),
    join(wall("deny lists")),
    join(wall("denied binaries"), fan ? "fanotify guard (paths)" : null),
    join(
      connect ? "cgroup connect program" : null,
      host.landlockAbi >= 4 ? "Landlock (TCP ports)" : null,
    ),
    "hidden (mount namespace)",
    scope ? "Landlock scope" : "no",
  ];
  const rootAttach = [
    fan ? "fanotify guard" : PAUSE,
    PAUSE,
    fan ? "fanotify guard (paths)" : PAUSE,
    connect ? "cgroup connect program (new sockets)" : PAUSE,
    fan ? "fanotify guard" : "no: readable by the agent",
    "no: journaled only (a running process cannot be walled)",
  ];
  const userAttach = [
    PAUSE,
    PAUSE,
    PAUSE,
    PAUSE,
    "no: readable by the agent",
    "no: a running process cannot be walled",
  ];
  const unknown = BLOCK_COLUMNS.map(() => "?");
  return [
    { command: "run", root: false, cells: userRun, unprobed: false },
    { command: "run", root: true, cells: rootProbed ? rootRun : unknown, unprobed: !rootProbed },
    { command: "attach", root: false, cells: userAttach, unprobed: false },
    {
      command: "attach",
      root: true,
      cells: rootProbed ? rootAttach : unknown,
      unprobed: !rootProbed,
    },
  ];
}
