/**
 * The API's errors and their JSON bodies: every failure is `{ error, field? }` with a status, and
 * nothing thrown inside a handler reaches the client as a stack trace.
 *
 * @module
 */

import type { z } from "zod";

/** An error with an HTTP status, thrown by handlers and turned into JSON by the app. */
export class HttpError extends Error {
  /** The HTTP status to answer with. */
  readonly status: 400 | 401 | 404 | 405 | 409 | 421 | 500;
  /** The request field at fault, if one was. */
  readonly field: string | undefined;

  /** Builds the error. */
  constructor(
    status: HttpError["status"],
    message: string,
    options: { field?: string; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? {} : { cause: options.cause });
    this.name = "HttpError";
    this.status = status;
    this.field = options.field;
  }
}

/**
 * Something the API needs is down for the moment (the collector's database): the request may
 * succeed later. Answered 503 with `Retry-After`, and without the driver's message (addresses and
 * internals stay in the server's log).
 */
export class UnavailableError extends Error {
  /** Seconds a client should wait before it tries again. */
  readonly retryAfterS: number;

  /** Builds the error; `message` is what the client reads. */
  constructor(message: string, options: { cause?: unknown; retryAfterS?: number } = {}) {
    super(message, options.cause === undefined ? {} : { cause: options.cause });
    this.name = "UnavailableError";
    this.retryAfterS = options.retryAfterS ?? 5;
  }
}

/**
 * Parses a request input with a schema, or throws a 400 {@link HttpError} naming the first bad
 * field (`what` when the input as a whole is wrong).
 */
export function parseInput<S extends z.ZodType>(
  schema: S,
  value: unknown,
  what: string,
): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const path = issue?.path ?? [];
  let field = path.length > 0 ? path.map(String).join(".") : what;
  let detail = issue?.message ?? "invalid";
  if (issue?.code === "unrecognized_keys" && issue.keys.length > 0) {
    field = issue.keys[0] ?? what;
    detail = "unknown parameter";
  }
  throw new HttpError(400, `Invalid ${field}: ${detail}`, { field });
}
