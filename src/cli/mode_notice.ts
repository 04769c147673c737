/**
 * The mode caps the response; the thresholds choose it below the cap. A mode whose threshold no
 * risk can reach (risks stop at 100) is not what its name says: say so at start.
 * @module
 */
import type { ResolvedPolicy } from "../policy/mod.ts";

/** The modes chosen by a threshold, least to most drastic. */
const BY_THRESHOLD = ["pause", "rollback", "kill"] as const;

/** The highest risk the engine gives. */
const MAX_RISK = 100;

/**
 * Says when a policy's mode is out of the thresholds' reach: `--mode kill` with
 * `thresholds.kill: 101` (the built-in templates' default, off) kills only on the rules that ask
 * for `kill`, and every other violation gets at most a rollback; with no such rule, the mode is
 * never reached at all. Returns the warning, or null when the thresholds reach the mode.
 */
export function modeCeiling(policy: ResolvedPolicy): string | null {
  const mode = policy.mode as typeof BY_THRESHOLD[number];
  const rank = (BY_THRESHOLD as readonly string[]).indexOf(mode);
  if (rank < 0 || policy.thresholds[mode] <= MAX_RISK) return null;
  const askedBy = (response: string) =>
    policy.rules.filter((r) => r.enabled && r.response === response).map((r) => r.id);
  let most = "alert";
  for (const m of BY_THRESHOLD.slice(0, rank)) {
    if (policy.thresholds[m] <= MAX_RISK) most = `${m} (at risk ${policy.thresholds[m]})`;
  }
  const rules = askedBy(mode);
  const why = `thresholds.${mode} is ${policy.thresholds[mode]}, above the highest risk ` +
    `(${MAX_RISK})`;
  const fix = `set thresholds.${mode} to ${MAX_RISK} or less for a risk to ${mode}`;
  if (rules.length === 0) {
    return `mode ${mode} is never reached: ${why} and no rule asks for ${mode}, ` +
      `so the most Sentry does is ${most}; ${fix}`;
  }
  const shown = rules.length > 4
    ? `${rules.slice(0, 4).join(", ")} and ${rules.length - 4} more`
    : rules.join(", ");
  return `mode ${mode}: ${why}, so only the rules that ask for ${mode} (${shown}) ${mode}; ` +
    `any other violation gets at most ${most}; ${fix}`;
}
