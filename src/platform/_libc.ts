/**
 * Opening the C library through FFI, and reading errno, for the kernel-facing modules of
 * src/platform. Private to src/platform.
 *
 * @module
 */

/**
 * Opens libc with `symbols`. Returns the library, or why it could not be opened (every name
 * tried, in one sentence); without --allow-ffi the first refusal is final.
 */
export function openLibc<S extends Deno.ForeignLibraryInterface>(
  symbols: S,
): Deno.DynamicLibrary<S> | string {
  const problems: string[] = [];
  for (const name of ["libc.so.6", "libc.so"]) {
    try {
      return Deno.dlopen(name, symbols);
    } catch (error: unknown) {
      problems.push(`${name}: ${error instanceof Error ? error.message : String(error)}`);
      if (error instanceof Deno.errors.NotCapable) break;
    }
  }
  return `Cannot open the C library: ${problems.join("; ")}`;
}

/** The calling thread's errno, through a library that binds `__errno_location`. */
export function errnoOf(lib: { symbols: { __errno_location(): Deno.PointerValue } }): number {
  const pointer = lib.symbols.__errno_location();
  return pointer === null ? 0 : new Deno.UnsafePointerView(pointer).getInt32();
}
