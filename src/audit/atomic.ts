/**
 * Atomic file writes: a temporary file beside the target, renamed into place once complete.
 *
 * @module
 */

import { basename, dirname, join } from "node:path";

/** Options for {@link writeFileAtomic}. */
export interface AtomicWriteOptions {
  /** The file's mode; default 0600 (audit reports say what agents did). */
  mode?: number;
}

/**
 * Writes a file through a temporary file in the same directory, synced and then renamed over
 * the target, so that a reader sees the old file or the whole new one, never a part. The
 * temporary file is removed when anything fails.
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  options: AtomicWriteOptions = {},
): Promise<void> {
  const mode = options.mode ?? 0o600;
  const temp = join(dirname(path), `.${basename(path)}.${Deno.pid}.${Date.now()}.tmp`);
  const file = await Deno.open(temp, { write: true, createNew: true, mode });
  try {
    try {
      await Deno.chmod(temp, mode); // The umask may have narrowed or widened nothing: be exact.
      const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
      for (let done = 0; done < bytes.length;) done += await file.write(bytes.subarray(done));
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.rename(temp, path);
  } catch (error) {
    await Deno.remove(temp).catch(() => {});
    throw error;
  }
}

/**
 * Opens a temporary file beside `path` for a streamed write, and returns the stream and a
 * `commit()` that renames it into place (or `abort()` that removes it).
 */
export async function openAtomic(
  path: string,
  options: AtomicWriteOptions = {},
): Promise<
  { stream: WritableStream<Uint8Array>; commit(): Promise<void>; abort(): Promise<void> }
> {
  const mode = options.mode ?? 0o600;
  const temp = join(dirname(path), `.${basename(path)}.${Deno.pid}.${Date.now()}.tmp`);
  const file = await Deno.open(temp, { write: true, createNew: true, mode });
  await Deno.chmod(temp, mode);
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    file.close();
  };
  const stream = new WritableStream<Uint8Array>({
    async write(chunk) {
      for (let done = 0; done < chunk.length;) done += await file.write(chunk.subarray(done));
    },
    async close() {
      await file.sync();
      close();
    },
    abort() {
      close();
    },
  });
  return {
    stream,
    async commit() {
      close();
      await Deno.rename(temp, path);
    },
    async abort() {
      close();
      await Deno.remove(temp).catch(() => {});
    },
  };
}
