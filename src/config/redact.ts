/**
 * URLs as Sentry prints them: without the secrets they may carry, so that no log, error or
 * status line repeats a password or a token.
 *
 * @module
 */

/** Query parameters whose values are secrets, by a part of their name. */
const SECRET_PARAM = /pass|token|key|secret|auth|sig|cred/i;

/**
 * `url` with its password, and the values of secret-looking query parameters (`password`,
 * `sslpassword`, `api_key`, `token`...), replaced by `***` (with `userinfo: "hide"`, the user
 * name too: in an http URL it may be a token); null when it does not parse as a URL.
 */
export function redactUrl(
  url: string,
  options: { userinfo?: "keep-user" | "hide" } = {},
): string | null {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return null;
  }
  if (u.password !== "") u.password = "***";
  if (options.userinfo === "hide" && u.username !== "") u.username = "***";
  for (const name of [...new Set(u.searchParams.keys())]) {
    if (SECRET_PARAM.test(name)) u.searchParams.set(name, "***");
  }
  return u.toString();
}
