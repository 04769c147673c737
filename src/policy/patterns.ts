import picomatch from "picomatch";

/** What a policy's path globs expand against. Injected so that compiling stays pure. */
export interface ExpandContext {
  /** The user's home directory, for `~` and `${HOME}`. */
  home: string;
  /** The agent's workspace, for `${WORKSPACE}`. */
  workspace: string;
  /** Environment variables, for `${NAME}` and `$NAME`. */
  env: Readonly<Record<string, string>>;
}

/**
 * Expands `~`, `${WORKSPACE}`, `${HOME}` and environment variables in a path glob, and checks
 * that the result is absolute (or starts with `**`, which matches any absolute path).
 * Throws a `RangeError` naming the glob when a variable is unset or the glob is malformed.
 */
export function expandGlob(glob: string, context: ExpandContext): string {
  checkGlobSyntax(glob);
  // Values are paths, not globs: `/work/my project (1)` must match itself, so they are escaped.
  // The leading `~` is split off first so that a `$` in the home directory stays literal.
  const home = glob === "~" || glob.startsWith("~/");
  const rest = home ? glob.slice(1) : glob;
  const expanded = rest.replace(
    /\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g,
    (_m, a, b) => {
      const name = (a ?? b) as string;
      const value = name === "WORKSPACE"
        ? context.workspace
        : name === "HOME"
        ? context.home
        : context.env[name];
      if (value === undefined || value === "") {
        throw new RangeError(`Unset variable "${name}" in glob "${glob}"`);
      }
      return escapeGlob(value);
    },
  );
  const out = home ? escapeGlob(context.home) + expanded : expanded;
  if (!out.startsWith("/") && !out.startsWith("**")) {
    throw new RangeError(
      `Bad glob "${glob}": a path glob must be absolute or start with ~, \${WORKSPACE}, \${HOME} or **`,
    );
  }
  // Collapse duplicate slashes that expansion can create (`${WORKSPACE}/` with a trailing /).
  return out.replace(/\/{2,}/g, "/");
}

const NEEDS_NORMALIZING = /\/\.{1,2}(?:\/|$)|\/\/|^\.{1,2}(?:\/|$)|^$/;

/**
 * Resolves `.` and `..` segments and repeated slashes, lexically (symlinks are not followed),
 * keeping a relative path relative. `/work/p/../../etc/x` becomes `/etc/x`, so that no path
 * slips past a deny glob by its spelling.
 */
export function normalizePath(path: string): string {
  // Fast path: most absolute paths hold neither `/.` nor `//`.
  if (path.charCodeAt(0) === 47 && !path.includes("/.") && !path.includes("//")) return path;
  if (!NEEDS_NORMALIZING.test(path)) return path;
  const absolute = path.startsWith("/");
  const out: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === ".." && out.length > 0 && out[out.length - 1] !== "..") out.pop();
    else if (part !== ".." || !absolute) out.push(part);
  }
  return (absolute ? "/" : "") + (out.join("/") || (absolute ? "" : "."));
}

/** Escapes the characters picomatch gives a meaning to, so that a path matches only itself. */
export function escapeGlob(path: string): string {
  return path.replace(/[\\*?[\]{}()!+@|]/g, "\\$&");
}

/** Throws a `RangeError` when a glob's brackets or braces do not balance. */
export function checkGlobSyntax(glob: string): void {
  let braces = 0;
  let inClass = false;
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i];
    if (ch === "\\") {
      i++;
      continue;
    }
    if (inClass) {
      if (ch === "]") inClass = false;
      continue;
    }
    if (ch === "[") inClass = true;
    else if (ch === "{") braces++;
    else if (ch === "}") {
      braces--;
      if (braces < 0) throw new RangeError(`Bad glob "${glob}": unbalanced "}"`);
    }
  }
  if (inClass) throw new RangeError(`Bad glob "${glob}": unclosed "["`);
  if (braces !== 0) throw new RangeError(`Bad glob "${glob}": unbalanced "{"`);
}

/** Compiles one path glob. */
export function pathGlobToRegExp(glob: string): RegExp {
  return picomatch.makeRe(glob, { dot: true });
}

/**
 * Compiles a wildcard pattern for non-path targets (`host:port`, command lines): `*` matches
 * any run of characters, `?` one character, and everything else is literal.
 */
export function wildcardToRegExp(pattern: string): RegExp {
  let src = "";
  for (const ch of pattern) {
    if (ch === "*") src += "[\\s\\S]*";
    else if (ch === "?") src += "[\\s\\S]";
    else src += ch.replace(/[.+^${}()|[\]\\/]/g, "\\$&");
  }
  return new RegExp(`^${src}$`);
}

/** An IP address: v4 as a 32-bit number, v6 as a 128-bit bigint. */
export type Ip = { v: 4; n: number } | { v: 6; n: bigint };

/**
 * Parses an IPv4 or IPv6 address, or returns null. IPv4-mapped IPv6 (`::ffff:1.2.3.4`) comes
 * back as IPv4, so that one rule covers both forms of the same peer.
 */
export function parseIp(text: string): Ip | null {
  if (text.includes(":")) return parseIp6(text);
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  let n = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return null;
    const b = Number(p);
    if (b > 255) return null;
    n = n * 256 + b;
  }
  return { v: 4, n };
}

function parseIp6(text: string): Ip | null {
  let s = text;
  const zone = s.indexOf("%");
  if (zone >= 0) s = s.slice(0, zone);
  let tail: number[] = [];
  const lastColon = s.lastIndexOf(":");
  const maybeV4 = s.slice(lastColon + 1);
  if (maybeV4.includes(".")) {
    const v4 = parseIp(maybeV4);
    if (v4 === null || v4.v !== 4) return null;
    tail = [v4.n >>> 16, v4.n & 0xffff];
    s = s.slice(0, lastColon + 1) + "0:0";
  }
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const head = halves[0] === "" ? [] : (halves[0] as string).split(":");
  const rest = halves.length === 2 && halves[1] !== "" ? (halves[1] as string).split(":") : [];
  const missing = 8 - head.length - rest.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  const groups = [...head, ...Array(halves.length === 2 ? missing : 0).fill("0"), ...rest];
  let n = 0n;
  for (const g of groups) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
    n = (n << 16n) | BigInt(parseInt(g, 16));
  }
  if (tail.length === 2) n = (n & ~0xffffffffn) | (BigInt(tail[0]!) << 16n) | BigInt(tail[1]!);
  // ::ffff:a.b.c.d is an IPv4 peer seen through a dual-stack socket.
  if (n >> 32n === 0xffffn) return { v: 4, n: Number(n & 0xffffffffn) };
  return { v: 6, n };
}

/** A CIDR block. */
export interface Cidr {
  v: 4 | 6;
  /** The network address, masked. */
  base: bigint;
  bits: number;
  /** For IPv4, the base and mask as unsigned 32-bit numbers: a test without BigInt. */
  base4: number;
  mask4: number;
}

/** Parses `10.0.0.0/8` or `fc00::/7`, or returns null when the text is not a CIDR. */
export function parseCidr(text: string): Cidr | null {
  const slash = text.indexOf("/");
  if (slash < 0) return null;
  const ip = parseIp(text.slice(0, slash));
  const bitsText = text.slice(slash + 1);
  if (ip === null || !/^\d{1,3}$/.test(bitsText)) return null;
  const bits = Number(bitsText);
  const width = ip.v === 4 ? 32 : 128;
  if (bits > width) return null;
  const n = BigInt(ip.n);
  const shift = BigInt(width - bits);
  const mask4 = ip.v === 4 && bits > 0 ? (0xffffffff << (32 - bits)) >>> 0 : 0;
  const base4 = ip.v === 4 ? ((ip.n & mask4) >>> 0) : 0;
  return { v: ip.v, base: (n >> shift) << shift, bits, base4, mask4 };
}

/** Tells whether an address lies in a CIDR block. */
export function cidrContains(cidr: Cidr, ip: Ip): boolean {
  if (cidr.v !== ip.v) return false;
  if (ip.v === 4) return ((ip.n & cidr.mask4) >>> 0) === cidr.base4;
  const shift = BigInt(128 - cidr.bits);
  return (BigInt(ip.n) >> shift) << shift === cidr.base;
}

/** One network allow or deny entry, parsed. */
export type NetworkEntry =
  | { type: "any"; text: string }
  | { type: "host"; text: string; host: string; ports: PortRange | null }
  | { type: "domain"; text: string; suffix: string; ports: PortRange | null }
  | { type: "cidr"; text: string; cidr: Cidr; ports: PortRange | null }
  | { type: "ip"; text: string; ip: Ip; ports: PortRange | null }
  | { type: "ports"; text: string; ports: PortRange }
  /** `unix:/path/glob` or `unix:@abstract-name`: a unix socket, matched by its path. */
  | { type: "unix"; text: string; path: RegExp };

/** An inclusive port range. */
export interface PortRange {
  lo: number;
  hi: number;
}

/** Parses `443` or `8000-8999`; throws a `RangeError` naming the entry when it is bad. */
export function parsePortRange(text: string, entry: string): PortRange {
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(text);
  if (!m) throw new RangeError(`Bad port range "${text}" in network entry "${entry}"`);
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  if (lo < 1 || hi > 65535 || lo > hi) {
    throw new RangeError(
      `Bad port range "${text}" in network entry "${entry}": ports are 1-65535, low to high`,
    );
  }
  return { lo, hi };
}

const HOSTNAME =
  /^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}))*\.?$/;

/**
 * Parses one network entry: `*`, `host`, `host:port`, `*.domain`, a CIDR (v4 or v6), an
 * address, `[v6]:port`, `:port` or `:lo-hi`, each host form optionally with a port range.
 * Throws a `RangeError` that quotes the entry when it is none of these.
 */
export function parseNetworkEntry(text: string): NetworkEntry {
  const entry = text.trim();
  if (entry === "*") return { type: "any", text: entry };
  if (entry.startsWith("unix:")) {
    const path = entry.slice(5);
    if (path === "" || (!path.startsWith("/") && !path.startsWith("@"))) {
      throw new RangeError(
        `Bad network entry "${entry}": a unix socket is unix:/absolute/path or unix:@abstract-name`,
      );
    }
    if (path.startsWith("/")) checkGlobSyntax(path);
    return {
      type: "unix",
      text: entry,
      path: path.startsWith("/") ? pathGlobToRegExp(path) : new RegExp(`^${escapeRegExp(path)}$`),
    };
  }
  // `:5432` is a port on any host; `::1` is an IPv6 address.
  if (entry.startsWith(":") && !entry.startsWith("::")) {
    return { type: "ports", text: entry, ports: parsePortRange(entry.slice(1), entry) };
  }
  let hostPart = entry;
  let ports: PortRange | null = null;
  if (entry.startsWith("[")) {
    const close = entry.indexOf("]");
    if (close < 0) throw new RangeError(`Bad network entry "${entry}": unclosed "["`);
    hostPart = entry.slice(1, close);
    const after = entry.slice(close + 1);
    if (after !== "") {
      if (!after.startsWith(":")) throw new RangeError(`Bad network entry "${entry}"`);
      ports = parsePortRange(after.slice(1), entry);
    }
  } else if (!entry.includes("/") || entry.indexOf(":") === entry.lastIndexOf(":")) {
    // One colon (or none) outside brackets: `host:port`. Bare IPv6 has several colons.
    const colon = entry.lastIndexOf(":");
    if (colon >= 0 && (entry.match(/:/g) ?? []).length === 1) {
      hostPart = entry.slice(0, colon);
      ports = parsePortRange(entry.slice(colon + 1), entry);
    }
  }
  if (hostPart.includes("/")) {
    const slash = hostPart.indexOf("/");
    const cidrText = hostPart;
    // A CIDR may carry a port after its prefix length: `10.0.0.0/8:5432`.
    const afterBits = /^(\d{1,3}):(.+)$/.exec(hostPart.slice(slash + 1));
    let cidrSource = cidrText;
    if (afterBits && ports === null) {
      cidrSource = hostPart.slice(0, slash + 1) + afterBits[1];
      ports = parsePortRange(afterBits[2] as string, entry);
    }
    const cidr = parseCidr(cidrSource);
    if (cidr === null) throw new RangeError(`Bad CIDR "${cidrSource}" in network entry "${entry}"`);
    return { type: "cidr", text: entry, cidr, ports };
  }
  const ip = parseIp(hostPart);
  if (ip !== null) return { type: "ip", text: entry, ip, ports };
  if (hostPart.startsWith("*.")) {
    const suffix = hostPart.slice(2).toLowerCase();
    if (!HOSTNAME.test(suffix)) {
      throw new RangeError(`Bad domain "${hostPart}" in network entry "${entry}"`);
    }
    return { type: "domain", text: entry, suffix: "." + suffix.replace(/\.$/, ""), ports };
  }
  if (!HOSTNAME.test(hostPart) || /^[\d.]+$/.test(hostPart)) {
    throw new RangeError(
      `Bad network entry "${entry}": not a host, host:port, *.domain, CIDR or port range`,
    );
  }
  return { type: "host", text: entry, host: hostPart.toLowerCase().replace(/\.$/, ""), ports };
}

/** A network endpoint as the engine sees it: an address, a port and the names it answers to. */
export interface Endpoint {
  ip: Ip | null;
  /** The host as written in the target, lower-cased. */
  host: string;
  port: number | null;
  /** Host names that resolve to this address (from the sensor's resolver). */
  names: readonly string[];
  /** For a unix socket (`unix:` target): its path, or `@name` when abstract; else null. */
  unix: string | null;
}

/** Splits a `host:port` or `[v6]:port` target into an endpoint. */
export function parseEndpoint(target: string, names: readonly string[] = []): Endpoint {
  if (target.startsWith("unix:")) {
    return { ip: null, host: "", port: null, names: [], unix: target.slice(5) };
  }
  let host = target;
  let port: number | null = null;
  if (target.startsWith("[")) {
    const close = target.indexOf("]");
    host = target.slice(1, close < 0 ? undefined : close);
    const p = close < 0 ? "" : target.slice(close + 2);
    if (/^\d+$/.test(p)) port = Number(p);
  } else {
    const colon = target.lastIndexOf(":");
    if (colon >= 0 && target.indexOf(":") === colon) {
      host = target.slice(0, colon);
      const p = target.slice(colon + 1);
      if (/^\d+$/.test(p)) port = Number(p);
    }
  }
  // Entries drop a name's trailing dot (`example.com.`), so the endpoint does too.
  const canonical = (name: string) => name.toLowerCase().replace(/\.$/, "");
  host = canonical(host);
  return { ip: parseIp(host), host, port, names: names.map(canonical), unix: null };
}

const LOOPBACK_V4 = parseCidr("127.0.0.0/8") as Cidr;

/** Tells whether an endpoint is loopback (127.0.0.0/8 or ::1). */
export function isLoopback(ip: Ip | null): boolean {
  if (ip === null) return false;
  return ip.v === 4 ? cidrContains(LOOPBACK_V4, ip) : ip.n === 1n;
}

/** Tells whether a parsed network entry matches an endpoint. */
export function networkEntryMatches(entry: NetworkEntry, ep: Endpoint): boolean {
  // A unix socket is matched only by `unix:` entries, and those match nothing else.
  if (ep.unix !== null) return entry.type === "unix" && entry.path.test(ep.unix);
  if (entry.type === "unix") return false;
  if (entry.type === "any") return true;
  if (entry.type !== "ports" && entry.ports !== null) {
    if (ep.port === null || ep.port < entry.ports.lo || ep.port > entry.ports.hi) return false;
  }
  switch (entry.type) {
    case "ports":
      return ep.port !== null && ep.port >= entry.ports.lo && ep.port <= entry.ports.hi;
    case "cidr":
      return ep.ip !== null && cidrContains(entry.cidr, ep.ip);
    case "ip":
      return ep.ip !== null && ep.ip.v === entry.ip.v && ep.ip.n === entry.ip.n;
    case "host":
      if (entry.host === "localhost" && isLoopback(ep.ip)) return true;
      return ep.host === entry.host || ep.names.includes(entry.host);
    case "domain":
      return ep.host.endsWith(entry.suffix) || ep.names.some((n) => n.endsWith(entry.suffix));
  }
}

/** The host names a list of entries mentions, which the network sensor resolves to addresses. */
export function namedHosts(entries: readonly NetworkEntry[]): string[] {
  const out = new Set<string>();
  for (const e of entries) if (e.type === "host" && e.host !== "localhost") out.add(e.host);
  return [...out];
}

/** Escapes every character a regular expression gives a meaning to. */
function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
