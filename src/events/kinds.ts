/**
 * The action kinds Sentry observes. Every sensor emits one of these, and the policy engine
 * decides on each. The list is closed on purpose: a new kind is a schema change that every
 * consumer (engine, journal, API, sync) must learn about.
 */
export const KINDS = [
  "file.read",
  "file.write",
  "file.create",
  "file.delete",
  "file.rename",
  "proc.exec",
  "proc.exit",
  "proc.control",
  "net.connect",
  "net.listen",
  "db.connect",
  "resource.cpu",
  "resource.memory",
] as const;

/** One action kind, such as `file.read` or `net.connect`. */
export type Kind = typeof KINDS[number];

/** The file kinds, whose target is an absolute path. */
export const FILE_KINDS: readonly Kind[] = [
  "file.read",
  "file.write",
  "file.create",
  "file.delete",
  "file.rename",
];

/** Tells whether a kind's target is a filesystem path. */
export function isFileKind(kind: Kind): boolean {
  return kind.startsWith("file.");
}

/** Tells whether a kind's target is a `host:port` endpoint. */
export function isNetKind(kind: Kind): boolean {
  return kind === "net.connect" || kind === "net.listen" || kind === "db.connect";
}

/**
 * The responses Sentry can take, from least to most drastic, with `block` (prevent the action
 * before it happens, where a sensor can) ranked between alert and pause.
 */
export const RESPONSES = ["none", "alert", "block", "pause", "rollback", "kill"] as const;

/** One response. */
export type Response = typeof RESPONSES[number];

/** The rank of a response in {@link RESPONSES}, used to cap responses by the policy mode. */
export function responseRank(response: Response): number {
  return RESPONSES.indexOf(response);
}
