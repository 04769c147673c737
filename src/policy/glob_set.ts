import picomatch from "picomatch";

/**
 * A path split once for matching: its first segment and its base name. Computing these once
 * per event, not once per glob set, keeps the evaluator's hot path cheap.
 */
export interface PathKey {
  path: string;
  segment: string;
  name: string;
}

/** Splits a path for {@link GlobSet.testKey} and {@link GlobSet.firstKey}. */
export function pathKey(path: string): PathKey {
  return { path, segment: firstSegment(path), name: basename(path) };
}

/** One glob of a set, compiled, with its place in the original list. */
interface Entry {
  index: number;
  text: string;
  /** The static directory prefix (`/home/a/.ssh` for `/home/a/.ssh/**`), or "" when none. */
  base: string;
  re: RegExp;
}

/**
 * A set of absolute path globs, compiled for fast matching of many paths. A path is tested only
 * against the globs that can match it:
 * - globs with a static prefix are indexed by the prefix's first path segment (`/home/...` ones
 *   are never tried on `/work/...`), and tried only when the path lies under the prefix;
 * - `**∕name` globs (no further slash) are tried on the path's base name alone;
 * - the rest are tried on the whole path.
 * Matching is exactly picomatch's, with `dot: true`.
 */
export class GlobSet {
  /** The globs, as given (after expansion). */
  readonly globs: readonly string[];
  readonly #bySegment = new Map<string, Entry[]>();
  readonly #basename: Entry[] = [];
  readonly #basenameAny: RegExp | null;
  readonly #floating: Entry[] = [];
  /** Labels to report for each glob (the text as written, before expansion). */
  readonly #labels: readonly string[];

  /** Compiles expanded globs; `labels[i]` is what `first()` reports for `globs[i]`. */
  constructor(globs: readonly string[], labels: readonly string[] = globs) {
    this.globs = globs;
    this.#labels = labels;
    globs.forEach((text, index) => {
      const re = picomatch.makeRe(text, { dot: true });
      // Unescaped, so that an escaped workspace path (`/my project \\(1\\)/**`) indexes by
      // its real prefix.
      const base = picomatch.scan(text, { unescape: true }).base;
      if (base.startsWith("/") && base.length > 1) {
        const segment = firstSegment(base);
        let list = this.#bySegment.get(segment);
        if (list === undefined) this.#bySegment.set(segment, list = []);
        list.push({ index, text, base, re });
      } else if (
        text.startsWith("**/") && !text.slice(3).includes("/") && !text.slice(3).includes("**")
      ) {
        this.#basename.push({
          index,
          text,
          base: "",
          re: picomatch.makeRe(text.slice(3), { dot: true }),
        });
      } else {
        this.#floating.push({ index, text, base: "", re });
      }
    });
    this.#basenameAny = this.#basename.length === 0
      ? null
      : new RegExp(this.#basename.map((e) => `(?:${e.re.source})`).join("|"));
  }

  /** The number of globs. */
  get size(): number {
    return this.globs.length;
  }

  /** Tells whether any glob matches the path. */
  test(path: string): boolean {
    return this.testKey(pathKey(path));
  }

  /** Tells whether any glob matches a path split by {@link pathKey}. */
  testKey(key: PathKey): boolean {
    const { path } = key;
    if (this.#bySegment.size > 0) {
      const bucket = this.#bySegment.get(key.segment);
      if (bucket !== undefined) {
        for (const e of bucket) if (under(path, e.base) && e.re.test(path)) return true;
      }
    }
    if (this.#basenameAny !== null && this.#basenameAny.test(key.name)) return true;
    for (const e of this.#floating) if (e.re.test(path)) return true;
    return false;
  }

  /** The label of the first glob, in list order, that matches the path, or undefined. */
  first(path: string): string | undefined {
    return this.firstKey(pathKey(path));
  }

  /** {@link first} for a path split by {@link pathKey}. */
  firstKey(key: PathKey): string | undefined {
    const { path } = key;
    let best = Infinity;
    const bucket = this.#bySegment.get(key.segment);
    if (bucket !== undefined) {
      for (const e of bucket) {
        if (e.index < best && under(path, e.base) && e.re.test(path)) best = e.index;
      }
    }
    for (const e of this.#basename) if (e.index < best && e.re.test(key.name)) best = e.index;
    for (const e of this.#floating) if (e.index < best && e.re.test(path)) best = e.index;
    return best === Infinity ? undefined : this.#labels[best];
  }
}

function firstSegment(path: string): string {
  const end = path.indexOf("/", 1);
  return end < 0 ? path.slice(1) : path.slice(1, end);
}

function under(path: string, base: string): boolean {
  return path.startsWith(base) &&
    (path.length === base.length || path.charCodeAt(base.length) === 47 || base.endsWith("/"));
}

function basename(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}
