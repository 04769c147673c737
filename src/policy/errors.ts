/** Where in a policy file a problem is, as far as it is known. */
export interface PolicyErrorOptions {
  /** The policy file, or the template name. */
  file?: string;
  line?: number;
  column?: number;
  /** The dotted path of the offending field, such as `files.read.deny[2]`. */
  field?: string;
  /** Every problem found, each a one-line message with its place (`policy validate` lists them). */
  problems?: readonly { message: string }[];
  cause?: unknown;
}

/**
 * A policy that cannot be loaded or compiled: bad YAML, an unknown key, a bad glob, CIDR or
 * port range, a missing file or an unknown template. The CLI prints its message on one line
 * and exits 2.
 */
export class PolicyError extends Error {
  /** The policy file, or the template name. */
  readonly file: string | undefined;
  readonly line: number | undefined;
  readonly column: number | undefined;
  /** The dotted path of the offending field. */
  readonly field: string | undefined;
  /** Every problem found, the first being this error's own; empty when only one is known. */
  readonly problems: readonly { message: string }[];

  /** Builds the error; the message should already name the file, place and value. */
  constructor(message: string, options: PolicyErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "PolicyError";
    this.file = options.file;
    this.line = options.line;
    this.column = options.column;
    this.field = options.field;
    this.problems = options.problems ?? [];
  }
}

/** Formats a field path as `files.read.deny[2]`. */
export function formatFieldPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`;
    else out += out === "" ? String(part) : `.${String(part)}`;
  }
  return out;
}
