/**
 * Durations as people write them in policies and flags: `500ms`, `30s`, `10m`, `1h`, or a
 * combination such as `1m30s`.
 *
 * @module
 */

/** The form {@link parseDuration} accepts, for the policy schema. */
export const DURATION_PATTERN = /^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$/;

const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * Parses a duration into milliseconds (rounded to a whole millisecond).
 *
 * @throws {RangeError} when the text is not a duration, or is zero.
 */
export function parseDuration(text: string): number {
  const trimmed = text.trim();
  if (!DURATION_PATTERN.test(trimmed)) {
    throw new RangeError(
      `Invalid duration "${text}": write a number and a unit, such as 500ms, 30s, 10m or 1h`,
    );
  }
  let ms = 0;
  for (const part of trimmed.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) {
    ms += Number(part[1]) * (UNIT_MS[part[2] as string] ?? 0);
  }
  const rounded = Math.round(ms);
  if (rounded <= 0) throw new RangeError(`Invalid duration "${text}": it must be longer than 0`);
  return rounded;
}
