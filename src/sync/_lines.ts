/**
 * Splits a byte stream into lines, as bytes: a bundle's hash chain is over the exact bytes of
 * each line, so lines are never decoded and re-encoded before hashing. (`TextLineStream` is in
 * `@std/streams`, which this build cannot reach, and works on text.)
 *
 * @module
 */

/** One line, without its `\n`. */
export interface Line {
  /** 1-based. */
  number: number;
  bytes: Uint8Array;
  /** False for a last line that the stream ended without a `\n` (a cut-off file). */
  terminated: boolean;
}

/** A line longer than the limit; the split stops there, so memory stays bounded. */
export class LineTooLongError extends Error {
  /** The line's number. */
  readonly line: number;

  /** Builds the error. */
  constructor(line: number, maxBytes: number) {
    super(`Line ${line} is longer than ${maxBytes} bytes`);
    this.name = "LineTooLongError";
    this.line = line;
  }
}

/**
 * Yields the lines of `stream` one by one, holding at most one line (up to `maxBytes`) plus one
 * chunk in memory. Errors of the stream itself pass through, after the complete lines before
 * them.
 *
 * @throws {LineTooLongError} when a line passes `maxBytes`.
 */
export async function* splitLines(
  stream: ReadableStream<Uint8Array>,
  maxBytes: number,
): AsyncGenerator<Line> {
  let parts: Uint8Array[] = [];
  let size = 0;
  let number = 1;
  const take = (tail: Uint8Array): Uint8Array => {
    const bytes = parts.length === 0 ? tail : concat([...parts, tail], size + tail.length);
    parts = [];
    size = 0;
    return bytes;
  };
  for await (const chunk of stream) {
    let start = 0;
    while (start < chunk.length) {
      const end = chunk.indexOf(0x0a, start);
      const stop = end === -1 ? chunk.length : end;
      if (size + stop - start > maxBytes) throw new LineTooLongError(number, maxBytes);
      if (end === -1) {
        // Copy: the stream may reuse its chunk's buffer.
        parts.push(chunk.slice(start));
        size += chunk.length - start;
        break;
      }
      yield { number, bytes: take(chunk.subarray(start, end)), terminated: true };
      number++;
      start = end + 1;
    }
  }
  if (size > 0) yield { number, bytes: take(new Uint8Array(0)), terminated: false };
}

function concat(parts: readonly Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(size);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
