/**
 * A mistake in how a command was called: a bad flag value, a missing argument, a file that
 * does not exist. The CLI prints it on one line with its hint and exits 2.
 */
export class UsageError extends Error {
  /** A one-line suggestion printed after the message. */
  readonly hint: string | undefined;

  /** Builds the error with an optional hint. */
  constructor(message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "UsageError";
    this.hint = options.hint;
  }
}

/**
 * An error that carries its own exit code, for commands whose outcome is not a plain success
 * or failure (a policy test with failed expectations, an agent's exit status).
 */
export class ExitCode extends Error {
  /** The process exit code. */
  readonly code: number;

  /** Builds the signal with an exit code and an optional message printed on stderr. */
  constructor(code: number, message = "") {
    super(message);
    this.name = "ExitCode";
    this.code = code;
  }
}
