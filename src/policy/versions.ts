/**
 * Versioned policies, the way Falco versions its rules files: a policy may say its own
 * `version` and the `required_sentry_version` it needs. A policy that needs a newer Sentry than
 * this one is refused at load, naming both versions, since a Sentry that does not know a key or
 * a behaviour the policy relies on would enforce something else than its author meant.
 *
 * @module
 */

import { VERSION } from "../version.ts";

/** A version as the policy keys take it: `MAJOR.MINOR.PATCH`, with an optional `-prerelease`. */
export const VERSION_PATTERN = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z.-]+))?$/;

/**
 * Compares two versions of the form {@link VERSION_PATTERN}: negative when `a` is older, 0 when
 * equal, positive when newer. A prerelease is older than its release (`1.0.0-rc.1 < 1.0.0`);
 * prereleases compare by their dot-separated parts, numbers numerically. Throws a `RangeError`
 * for a malformed version.
 */
export function compareVersions(a: string, b: string): number {
  const pa = parse(a);
  const pb = parse(b);
  for (let i = 0; i < 3; i++) {
    const d = (pa.core[i] ?? 0) - (pb.core[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  if (pa.pre === null || pb.pre === null) {
    return pa.pre === pb.pre ? 0 : pa.pre === null ? 1 : -1;
  }
  const xs = pa.pre.split(".");
  const ys = pb.pre.split(".");
  for (let i = 0; i < Math.max(xs.length, ys.length); i++) {
    const x = xs[i];
    const y = ys[i];
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    const nx = /^\d+$/.test(x) ? Number(x) : null;
    const ny = /^\d+$/.test(y) ? Number(y) : null;
    if (nx !== null && ny !== null) {
      if (nx !== ny) return Math.sign(nx - ny);
    } else if (nx !== null) {
      return -1;
    } else if (ny !== null) {
      return 1;
    } else if (x !== y) {
      return x < y ? -1 : 1;
    }
  }
  return 0;
}

function parse(version: string): { core: number[]; pre: string | null } {
  const m = VERSION_PATTERN.exec(version);
  if (m === null) {
    throw new RangeError(`Invalid version "${version}": expected MAJOR.MINOR.PATCH, such as 1.2.0`);
  }
  return { core: [Number(m[1]), Number(m[2]), Number(m[3])], pre: m[4] ?? null };
}

/**
 * Why a policy that requires Sentry `required` cannot load in this Sentry (`running`, by default
 * {@link VERSION}), or null when it can.
 */
export function sentryTooOld(required: string, running: string = VERSION): string | null {
  if (compareVersions(required, running) <= 0) return null;
  return `this policy requires Sentry ${required} or newer, and this is Sentry ${running}: ` +
    "upgrade Sentry, or use a version of the policy made for this one";
}

/**
 * Checks a policy's raw data (before the schema, whose keys a newer policy may outgrow): a
 * `required_sentry_version` newer than this Sentry is reported through `fail` at its field.
 */
export function requireSentryVersion(
  data: unknown,
  fail: (path: PropertyKey[], reason: string) => void,
  running: string = VERSION,
): void {
  if (data === null || typeof data !== "object") return;
  const required = (data as Record<string, unknown>)["required_sentry_version"];
  // A malformed value is the schema's to report.
  if (typeof required !== "string" || !VERSION_PATTERN.test(required)) return;
  const why = sentryTooOld(required, running);
  if (why !== null) fail(["required_sentry_version"], `field "required_sentry_version": ${why}`);
}
