import assert from "node:assert/strict";
import {
  checkGlobSyntax,
  cidrContains,
  type Endpoint,
  escapeGlob,
  type ExpandContext,
  expandGlob,
  type Ip,
  isLoopback,
  namedHosts,
  type NetworkEntry,
  networkEntryMatches,
  normalizePath,
  parseCidr,
  parseEndpoint,
  parseIp,
  parseNetworkEntry,
  parsePortRange,
  pathGlobToRegExp,
  wildcardToRegExp,
} from "./patterns.ts";

const CTX: ExpandContext = {
  home: "/home/agent",
  workspace: "/work/project",
  env: { DATA: "/srv/data", EMPTY: "", TRAIL: "/srv/trail/" },
};

/** Asserts that `fn` throws a `RangeError` whose message includes every fragment. */
function throwsRange(fn: () => unknown, ...fragments: string[]): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof RangeError, `expected a RangeError, got ${error}`);
    for (const f of fragments) assert.ok(error.message.includes(f), `"${error.message}" has ${f}`);
    return true;
  });
}

function v4(text: string): Ip {
  const ip = parseIp(text);
  assert.ok(ip !== null && ip.v === 4, text);
  return ip;
}

function v6(text: string): bigint {
  const ip = parseIp(text);
  assert.ok(ip !== null && ip.v === 6, text);
  return ip.n as bigint;
}

function ep(target: string, names: string[] = []): Endpoint {
  return parseEndpoint(target, names);
}

function matches(entry: string, target: string, names: string[] = []): boolean {
  return networkEntryMatches(parseNetworkEntry(entry), ep(target, names));
}

// --- expandGlob ---------------------------------------------------------------------------

Deno.test("`expandGlob()` expands a leading ~ to the home directory", () => {
  assert.equal(expandGlob("~/.ssh/**", CTX), "/home/agent/.ssh/**");
  assert.equal(expandGlob("~", CTX), "/home/agent");
});

Deno.test("`expandGlob()` leaves a ~ that is not leading alone", () => {
  assert.equal(expandGlob("/tmp/~backup/*", CTX), "/tmp/~backup/*");
});

Deno.test("`expandGlob()` rejects ~user, which it cannot expand", () => {
  throwsRange(() => expandGlob("~root/.ssh/**", CTX), '"~root/.ssh/**"', "absolute");
});

Deno.test("`expandGlob()` expands ${WORKSPACE} and ${HOME}", () => {
  assert.equal(expandGlob("${WORKSPACE}/**", CTX), "/work/project/**");
  assert.equal(expandGlob("${HOME}/.aws/**", CTX), "/home/agent/.aws/**");
  assert.equal(expandGlob("$WORKSPACE/src/*.ts", CTX), "/work/project/src/*.ts");
  assert.equal(expandGlob("$HOME/.npmrc", CTX), "/home/agent/.npmrc");
});

Deno.test("`expandGlob()` takes WORKSPACE and HOME from the context, not the environment", () => {
  const ctx = { ...CTX, env: { HOME: "/elsewhere", WORKSPACE: "/nowhere" } };
  assert.equal(expandGlob("${HOME}/x", ctx), "/home/agent/x");
  assert.equal(expandGlob("${WORKSPACE}/x", ctx), "/work/project/x");
});

Deno.test("`expandGlob()` expands $VAR and ${VAR} from the environment", () => {
  assert.equal(expandGlob("$DATA/**", CTX), "/srv/data/**");
  assert.equal(expandGlob("${DATA}/**", CTX), "/srv/data/**");
  assert.equal(expandGlob("${DATA}_old/*", CTX), "/srv/data_old/*");
});

Deno.test("`expandGlob()` collapses the double slash a trailing slash in a variable leaves", () => {
  assert.equal(expandGlob("${TRAIL}/x/**", CTX), "/srv/trail/x/**");
  assert.equal(expandGlob("${WORKSPACE}/**", { ...CTX, workspace: "/w/" }), "/w/**");
});

Deno.test("`expandGlob()` names the variable and the glob when a variable is unset", () => {
  throwsRange(() => expandGlob("${NOPE}/**", CTX), '"NOPE"', '"${NOPE}/**"');
  throwsRange(() => expandGlob("$NOPE/x", CTX), '"NOPE"', '"$NOPE/x"');
});

Deno.test("`expandGlob()` treats an empty variable as unset", () => {
  throwsRange(() => expandGlob("$EMPTY/x", CTX), '"EMPTY"', '"$EMPTY/x"');
});

Deno.test("`expandGlob()` rejects a relative glob and quotes it", () => {
  throwsRange(() => expandGlob("src/**", CTX), '"src/**"', "absolute");
  throwsRange(() => expandGlob("*.pem", CTX), '"*.pem"');
  throwsRange(() => expandGlob("./x", CTX), '"./x"');
});

Deno.test("`expandGlob()` escapes glob characters in expanded values so a path matches itself", () => {
  const ctx = {
    home: "/Users/a (work)",
    workspace: "/work/my project [1] {x}",
    env: { ODD: "/srv/a*b?c!d+e@f|g" },
  };
  const cases: [string, string, string][] = [
    ["${WORKSPACE}/**", "/work/my project [1] {x}/src/a.ts", "/work/my project 1 x/src/a.ts"],
    ["~/.ssh/**", "/Users/a (work)/.ssh/id_rsa", "/Users/a work/.ssh/id_rsa"],
    ["${HOME}/*", "/Users/a (work)/.bashrc", "/Users/a w/.bashrc"],
    ["$ODD/*", "/srv/a*b?c!d+e@f|g/x", "/srv/aXbYc!d+e@f|g/x"],
  ];
  for (const [glob, hit, miss] of cases) {
    const re = pathGlobToRegExp(expandGlob(glob, ctx));
    assert.ok(re.test(hit), `${glob} matches ${hit}`);
    assert.ok(!re.test(miss), `${glob} does not match ${miss}`);
  }
});

Deno.test("`expandGlob()` keeps a $ in the home directory literal", () => {
  const re = pathGlobToRegExp(expandGlob("~/x", { ...CTX, home: "/home/a$DATA" }));
  assert.ok(re.test("/home/a$DATA/x"));
});

Deno.test("`escapeGlob()` escapes picomatch's special characters and nothing else", () => {
  assert.equal(escapeGlob("/a/b c.d-e_f"), "/a/b c.d-e_f");
  assert.equal(escapeGlob("/(a)[b]{c}*?!+@|\\"), "/\\(a\\)\\[b\\]\\{c\\}\\*\\?\\!\\+\\@\\|\\\\");
});

Deno.test("`expandGlob()` accepts a glob that starts with **", () => {
  assert.equal(expandGlob("**/.env", CTX), "**/.env");
});

Deno.test("`expandGlob()` rejects unbalanced braces and brackets, quoting the glob", () => {
  throwsRange(() => expandGlob("/a/{b,c/**", CTX), '"/a/{b,c/**"', '"{"');
  throwsRange(() => expandGlob("/a/b}/**", CTX), '"/a/b}/**"', '"}"');
  throwsRange(() => expandGlob("/a/[bc/**", CTX), '"/a/[bc/**"', '"["');
});

Deno.test("`checkGlobSyntax()` accepts balanced and escaped brackets and braces", () => {
  for (const g of ["/a/{b,c}/**", "/a/[bc]*", "/a/\\{x", "/a/\\[x", "/a/[{]", "/a/{b,{c,d}}"]) {
    checkGlobSyntax(g);
  }
});

Deno.test("`pathGlobToRegExp()` matches dot files and keeps * within one segment", () => {
  const re = pathGlobToRegExp("/home/agent/*");
  assert.ok(re.test("/home/agent/.bashrc"));
  assert.ok(!re.test("/home/agent/a/b"));
  assert.ok(pathGlobToRegExp("/home/agent/**").test("/home/agent/a/.b/c"));
});

// --- wildcardToRegExp ---------------------------------------------------------------------

Deno.test("`wildcardToRegExp()` treats * and ? as wildcards and the rest literally", () => {
  const re = wildcardToRegExp("*pastebin*");
  assert.ok(re.test("pastebin.com:443"));
  assert.ok(re.test("x.pastebin.com:443"));
  assert.ok(!re.test("paste-bin.com"));
  assert.ok(wildcardToRegExp("a.b").test("a.b"));
  assert.ok(!wildcardToRegExp("a.b").test("axb"));
  assert.ok(wildcardToRegExp("py?hon").test("python"));
  assert.ok(wildcardToRegExp("(x)[y]{z}|$^+\\").test("(x)[y]{z}|$^+\\"));
  assert.ok(wildcardToRegExp("*").test("a\nb"));
});

// --- parseIp ------------------------------------------------------------------------------

Deno.test("`parseIp()` parses IPv4 as a 32-bit number", () => {
  assert.deepEqual(parseIp("0.0.0.0"), { v: 4, n: 0 });
  assert.deepEqual(parseIp("127.0.0.1"), { v: 4, n: 0x7f000001 });
  assert.deepEqual(parseIp("255.255.255.255"), { v: 4, n: 0xffffffff });
  assert.deepEqual(parseIp("10.1.2.3"), { v: 4, n: 0x0a010203 });
});

Deno.test("`parseIp()` rejects malformed IPv4", () => {
  for (
    const bad of [
      "",
      "1.2.3",
      "1.2.3.4.5",
      "256.0.0.1",
      "1.2.3.-4",
      "1.2.3.x",
      "1..2.3",
      "1.2.3.4 ",
      "1234.1.1.1",
      "a.b.c.d",
    ]
  ) {
    assert.equal(parseIp(bad), null, bad);
  }
});

Deno.test("`parseIp()` parses full and compressed IPv6", () => {
  assert.equal(v6("::"), 0n);
  assert.equal(v6("::1"), 1n);
  assert.equal(v6("0:0:0:0:0:0:0:1"), 1n);
  assert.equal(v6("1::"), 1n << 112n);
  assert.equal(v6("fe80::1"), (0xfe80n << 112n) | 1n);
  assert.equal(v6("2001:db8::8a2e:370:7334"), v6("2001:0db8:0000:0000:0000:8a2e:0370:7334"));
  assert.equal(v6("2001:DB8::1"), v6("2001:db8::1"));
  assert.equal(v6("1:2:3:4:5:6:7::"), v6("1:2:3:4:5:6:7:0"));
  assert.equal(v6("::2:3:4:5:6:7:8"), v6("0:2:3:4:5:6:7:8"));
  assert.equal(v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), (1n << 128n) - 1n);
});

Deno.test("`parseIp()` drops an IPv6 zone id", () => {
  assert.equal(v6("fe80::1%eth0"), v6("fe80::1"));
});

Deno.test("`parseIp()` maps ::ffff:1.2.3.4 to IPv4, in dotted and hex form", () => {
  assert.deepEqual(parseIp("::ffff:1.2.3.4"), { v: 4, n: 0x01020304 });
  assert.deepEqual(parseIp("::FFFF:127.0.0.1"), { v: 4, n: 0x7f000001 });
  assert.deepEqual(parseIp("::ffff:7f00:1"), { v: 4, n: 0x7f000001 });
  assert.deepEqual(parseIp("0:0:0:0:0:ffff:a00:1"), { v: 4, n: 0x0a000001 });
});

Deno.test("`parseIp()` keeps other embedded IPv4 forms as IPv6", () => {
  assert.equal(v6("64:ff9b::1.2.3.4"), (0x64n << 112n) | (0xff9bn << 96n) | 0x01020304n);
});

Deno.test("`parseIp()` rejects malformed IPv6", () => {
  for (
    const bad of [
      ":",
      ":::",
      "1:2",
      "1::2::3",
      "1:2:3:4:5:6:7:8:9",
      "1:2:3:4:5:6:7:8::",
      "::1:2:3:4:5:6:7:8",
      "12345::",
      "g::1",
      "::ffff:1.2.3",
      "::ffff:1.2.3.256",
      "1.2.3.4::",
      "[::1]",
    ]
  ) {
    assert.equal(parseIp(bad), null, bad);
  }
});

// --- parseCidr / cidrContains -------------------------------------------------------------

Deno.test("`parseCidr()` parses a v4 block and masks host bits", () => {
  assert.deepEqual(parseCidr("10.0.0.0/8"), {
    v: 4,
    base: 0x0a000000n,
    bits: 8,
    base4: 0xa000000,
    mask4: 0xff000000,
  });
  assert.deepEqual(parseCidr("10.1.2.3/8"), {
    v: 4,
    base: 0x0a000000n,
    bits: 8,
    base4: 0xa000000,
    mask4: 0xff000000,
  });
  assert.deepEqual(parseCidr("0.0.0.0/0"), { v: 4, base: 0n, bits: 0, base4: 0, mask4: 0 });
  assert.deepEqual(parseCidr("1.2.3.4/32"), {
    v: 4,
    base: 0x01020304n,
    bits: 32,
    base4: 0x1020304,
    mask4: 0xffffffff,
  });
});

Deno.test("`parseCidr()` parses a v6 block", () => {
  assert.deepEqual(parseCidr("fc00::/7"), {
    v: 6,
    base: 0xfcn << 120n,
    bits: 7,
    base4: 0,
    mask4: 0,
  });
  assert.deepEqual(parseCidr("::/0"), { v: 6, base: 0n, bits: 0, base4: 0, mask4: 0 });
  assert.deepEqual(parseCidr("::1/128"), { v: 6, base: 1n, bits: 128, base4: 0, mask4: 0 });
});

Deno.test("`parseCidr()` returns null for a bad address or prefix", () => {
  for (
    const bad of [
      "10.0.0.0",
      "10.0.0.0/33",
      "::/129",
      "10.0.0.0/",
      "10.0.0.0/-1",
      "10.0.0.0/a",
      "10.0.0/8",
      "/8",
      "10.0.0.0/1000",
    ]
  ) {
    assert.equal(parseCidr(bad), null, bad);
  }
});

Deno.test("`cidrContains()` tests v4 addresses against /8, /0 and /32", () => {
  const ten = parseCidr("10.0.0.0/8")!;
  assert.ok(cidrContains(ten, v4("10.0.0.0")));
  assert.ok(cidrContains(ten, v4("10.255.255.255")));
  assert.ok(!cidrContains(ten, v4("11.0.0.0")));
  assert.ok(!cidrContains(ten, v4("9.255.255.255")));
  const all = parseCidr("0.0.0.0/0")!;
  assert.ok(cidrContains(all, v4("0.0.0.0")));
  assert.ok(cidrContains(all, v4("255.255.255.255")));
  const one = parseCidr("192.168.1.7/32")!;
  assert.ok(cidrContains(one, v4("192.168.1.7")));
  assert.ok(!cidrContains(one, v4("192.168.1.8")));
  const odd = parseCidr("172.16.0.0/12")!;
  assert.ok(cidrContains(odd, v4("172.31.255.255")));
  assert.ok(!cidrContains(odd, v4("172.32.0.0")));
});

Deno.test("`cidrContains()` tests v6 addresses against /7, /0 and /128", () => {
  const ula = parseCidr("fc00::/7")!;
  assert.ok(cidrContains(ula, parseIp("fd12:3456::1")!));
  assert.ok(!cidrContains(ula, parseIp("fe80::1")!));
  const all = parseCidr("::/0")!;
  assert.ok(cidrContains(all, parseIp("2001:db8::1")!));
  const one = parseCidr("::1/128")!;
  assert.ok(cidrContains(one, parseIp("::1")!));
  assert.ok(!cidrContains(one, parseIp("::2")!));
});

Deno.test("`cidrContains()` never matches across address families", () => {
  assert.ok(!cidrContains(parseCidr("::/0")!, v4("1.2.3.4")));
  assert.ok(!cidrContains(parseCidr("0.0.0.0/0")!, parseIp("::1")!));
  // A mapped peer is IPv4, so v4 blocks cover it.
  assert.ok(cidrContains(parseCidr("10.0.0.0/8")!, parseIp("::ffff:10.9.8.7")!));
});

// --- parsePortRange -----------------------------------------------------------------------

Deno.test("`parsePortRange()` parses a port and an inclusive range", () => {
  assert.deepEqual(parsePortRange("443", "x"), { lo: 443, hi: 443 });
  assert.deepEqual(parsePortRange("8000-8999", "x"), { lo: 8000, hi: 8999 });
  assert.deepEqual(parsePortRange("1-65535", "x"), { lo: 1, hi: 65535 });
});

// --- parseNetworkEntry --------------------------------------------------------------------

Deno.test("`parseNetworkEntry()` parses `*` as any", () => {
  assert.deepEqual(parseNetworkEntry("*"), { type: "any", text: "*" });
});

Deno.test("`parseNetworkEntry()` parses a host, lower-cased, with its trailing dot dropped", () => {
  assert.deepEqual(parseNetworkEntry("API.GitHub.com."), {
    type: "host",
    text: "API.GitHub.com.",
    host: "api.github.com",
    ports: null,
  });
  assert.deepEqual(parseNetworkEntry("localhost"), {
    type: "host",
    text: "localhost",
    host: "localhost",
    ports: null,
  });
});

Deno.test("`parseNetworkEntry()` parses host:port and host:lo-hi", () => {
  assert.deepEqual(parseNetworkEntry("api.github.com:443"), {
    type: "host",
    text: "api.github.com:443",
    host: "api.github.com",
    ports: { lo: 443, hi: 443 },
  });
  assert.deepEqual(parseNetworkEntry("localhost:3000-3999"), {
    type: "host",
    text: "localhost:3000-3999",
    host: "localhost",
    ports: { lo: 3000, hi: 3999 },
  });
});

Deno.test("`parseNetworkEntry()` parses *.domain as a suffix, with or without a port", () => {
  assert.deepEqual(parseNetworkEntry("*.GitHub.com"), {
    type: "domain",
    text: "*.GitHub.com",
    suffix: ".github.com",
    ports: null,
  });
  const withPort = parseNetworkEntry("*.npmjs.org:443");
  assert.equal(withPort.type, "domain");
  assert.deepEqual(withPort.type === "domain" && withPort.ports, { lo: 443, hi: 443 });
});

Deno.test("`parseNetworkEntry()` parses v4 and v6 CIDR blocks", () => {
  assert.deepEqual(parseNetworkEntry("10.0.0.0/8"), {
    type: "cidr",
    text: "10.0.0.0/8",
    cidr: { v: 4, base: 0x0a000000n, bits: 8, base4: 0xa000000, mask4: 0xff000000 },
    ports: null,
  });
  assert.deepEqual(parseNetworkEntry("fc00::/7"), {
    type: "cidr",
    text: "fc00::/7",
    cidr: { v: 6, base: 0xfcn << 120n, bits: 7, base4: 0, mask4: 0 },
    ports: null,
  });
});

Deno.test("`parseNetworkEntry()` parses a CIDR with a port, v4 and v6", () => {
  assert.deepEqual(parseNetworkEntry("10.0.0.0/8:5432"), {
    type: "cidr",
    text: "10.0.0.0/8:5432",
    cidr: { v: 4, base: 0x0a000000n, bits: 8, base4: 0xa000000, mask4: 0xff000000 },
    ports: { lo: 5432, hi: 5432 },
  });
  assert.deepEqual(parseNetworkEntry("fc00::/7:5000-5999"), {
    type: "cidr",
    text: "fc00::/7:5000-5999",
    cidr: { v: 6, base: 0xfcn << 120n, bits: 7, base4: 0, mask4: 0 },
    ports: { lo: 5000, hi: 5999 },
  });
});

Deno.test("`parseNetworkEntry()` parses a bare v4 address, with or without a port", () => {
  assert.deepEqual(parseNetworkEntry("203.0.113.7"), {
    type: "ip",
    text: "203.0.113.7",
    ip: { v: 4, n: 0xcb007107 },
    ports: null,
  });
  assert.deepEqual(parseNetworkEntry("169.254.169.254:80"), {
    type: "ip",
    text: "169.254.169.254:80",
    ip: { v: 4, n: 0xa9fea9fe },
    ports: { lo: 80, hi: 80 },
  });
});

Deno.test("`parseNetworkEntry()` parses a bare v6 address without taking its last group as a port", () => {
  assert.deepEqual(parseNetworkEntry("::1"), {
    type: "ip",
    text: "::1",
    ip: { v: 6, n: 1n },
    ports: null,
  });
  const full = parseNetworkEntry("2001:db8::8080");
  assert.equal(full.type, "ip");
  assert.equal(full.type === "ip" && full.ports, null);
});

Deno.test("`parseNetworkEntry()` parses v6 addresses that start with ::, not as ports", () => {
  assert.deepEqual(parseNetworkEntry("::"), {
    type: "ip",
    text: "::",
    ip: { v: 6, n: 0n },
    ports: null,
  });
  assert.deepEqual(parseNetworkEntry("::ffff:10.0.0.1"), {
    type: "ip",
    text: "::ffff:10.0.0.1",
    ip: { v: 4, n: 0x0a000001 },
    ports: null,
  });
  assert.equal(parseNetworkEntry("::/0").type, "cidr");
});

Deno.test("`parseNetworkEntry()` parses [v6]:port and [v6]", () => {
  assert.deepEqual(parseNetworkEntry("[::1]:8080"), {
    type: "ip",
    text: "[::1]:8080",
    ip: { v: 6, n: 1n },
    ports: { lo: 8080, hi: 8080 },
  });
  assert.deepEqual(parseNetworkEntry("[::1]"), {
    type: "ip",
    text: "[::1]",
    ip: { v: 6, n: 1n },
    ports: null,
  });
});

Deno.test("`parseNetworkEntry()` parses :port and :lo-hi as ports on any host", () => {
  assert.deepEqual(parseNetworkEntry(":5432"), {
    type: "ports",
    text: ":5432",
    ports: { lo: 5432, hi: 5432 },
  });
  assert.deepEqual(parseNetworkEntry(":8000-8999"), {
    type: "ports",
    text: ":8000-8999",
    ports: { lo: 8000, hi: 8999 },
  });
});

Deno.test("`parseNetworkEntry()` trims surrounding space", () => {
  assert.equal(parseNetworkEntry("  example.com ").text, "example.com");
});

Deno.test("`parseNetworkEntry()` rejects bad port ranges, quoting the range and the entry", () => {
  throwsRange(() => parseNetworkEntry(":0"), '"0"', '":0"', "1-65535");
  throwsRange(() => parseNetworkEntry(":9-3"), '"9-3"', '":9-3"', "low to high");
  throwsRange(() => parseNetworkEntry(":70000"), '"70000"', '":70000"');
  throwsRange(() => parseNetworkEntry("host:abc"), '"abc"', '"host:abc"');
  throwsRange(() => parseNetworkEntry("host:"), '"host:"');
  throwsRange(() => parseNetworkEntry("localhost:3000-"), '"3000-"');
  throwsRange(() => parseNetworkEntry("[::1]:99999"), '"99999"', '"[::1]:99999"');
});

Deno.test("`parseNetworkEntry()` rejects a bad CIDR, quoting it", () => {
  throwsRange(() => parseNetworkEntry("10.0.0.0/33"), 'Bad CIDR "10.0.0.0/33"');
  throwsRange(() => parseNetworkEntry("fc00::/129"), '"fc00::/129"');
  throwsRange(() => parseNetworkEntry("example.com/8"), '"example.com/8"');
  throwsRange(() => parseNetworkEntry("10.0.0.0/8:0"), '"0"', '"10.0.0.0/8:0"');
});

Deno.test("`parseNetworkEntry()` rejects bad hosts and brackets, quoting the entry", () => {
  throwsRange(() => parseNetworkEntry("exa mple.com"), '"exa mple.com"');
  throwsRange(() => parseNetworkEntry("[::1"), '"[::1"', "unclosed");
  throwsRange(() => parseNetworkEntry("[::1]8080"), '"[::1]8080"');
  throwsRange(() => parseNetworkEntry("*.exa mple.com"), '"*.exa mple.com"');
  throwsRange(() => parseNetworkEntry("*."), '"*."');
  throwsRange(() => parseNetworkEntry("*example.com"), '"*example.com"');
  throwsRange(() => parseNetworkEntry("999.1.1.1"), '"999.1.1.1"');
  throwsRange(() => parseNetworkEntry("1.2.3"), '"1.2.3"');
  throwsRange(() => parseNetworkEntry(""), '""');
  throwsRange(() => parseNetworkEntry("http://example.com"), '"http://example.com"');
});

// --- parseEndpoint ------------------------------------------------------------------------

Deno.test("`parseEndpoint()` splits a v4 target into address and port", () => {
  assert.deepEqual(parseEndpoint("10.1.2.3:5432"), {
    ip: { v: 4, n: 0x0a010203 },
    host: "10.1.2.3",
    port: 5432,
    names: [],
    unix: null,
  });
});

Deno.test("`parseEndpoint()` splits a bracketed v6 target into address and port", () => {
  assert.deepEqual(parseEndpoint("[2001:DB8::1]:443"), {
    ip: { v: 6, n: (0x2001n << 112n) | (0xdb8n << 96n) | 1n },
    host: "2001:db8::1",
    port: 443,
    names: [],
    unix: null,
  });
  assert.deepEqual(parseEndpoint("[::ffff:10.0.0.1]:80").ip, { v: 4, n: 0x0a000001 });
});

Deno.test("`parseEndpoint()` reads a target without a port, and a bare v6 address", () => {
  assert.deepEqual(parseEndpoint("example.com"), {
    ip: null,
    host: "example.com",
    port: null,
    names: [],
    unix: null,
  });
  const bare = parseEndpoint("::1");
  assert.equal(bare.port, null);
  assert.deepEqual(bare.ip, { v: 6, n: 1n });
  assert.equal(parseEndpoint("[::1]").port, null);
});

Deno.test("`parseEndpoint()` lower-cases the host and the resolved names", () => {
  const e = parseEndpoint("API.GitHub.com:443", ["Api.GitHub.COM"]);
  assert.equal(e.host, "api.github.com");
  assert.deepEqual(e.names, ["api.github.com"]);
  assert.equal(e.ip, null);
});

Deno.test("`parseEndpoint()` drops a host name's trailing dot", () => {
  assert.equal(parseEndpoint("example.com.:443").host, "example.com");
  assert.ok(matches("example.com", "example.com.:443"));
  assert.ok(matches("*.example.com", "api.example.com.:443"));
});

// --- networkEntryMatches ------------------------------------------------------------------

Deno.test("`networkEntryMatches()` matches `*` against anything", () => {
  assert.ok(matches("*", "1.2.3.4:80"));
  assert.ok(matches("*", "[::1]:1"));
  assert.ok(matches("*", "example.com"));
});

Deno.test("`networkEntryMatches()` matches localhost against 127.0.0.0/8 and ::1", () => {
  assert.ok(matches("localhost", "127.0.0.1:80"));
  assert.ok(matches("localhost", "127.0.0.5:80"));
  assert.ok(matches("localhost", "127.255.255.254:80"));
  assert.ok(matches("localhost", "[::1]:80"));
  assert.ok(matches("localhost", "[::ffff:127.0.0.1]:80"));
  assert.ok(matches("localhost", "localhost:80"));
  assert.ok(!matches("localhost", "128.0.0.1:80"));
  assert.ok(!matches("localhost", "[::2]:80"));
  assert.ok(!matches("localhost", "10.0.0.1:80"));
});

Deno.test("`networkEntryMatches()` matches localhost with a port range only inside it", () => {
  assert.ok(matches("localhost:3000-3999", "127.0.0.1:3000"));
  assert.ok(matches("localhost:3000-3999", "[::1]:3999"));
  assert.ok(!matches("localhost:3000-3999", "127.0.0.1:2999"));
  assert.ok(!matches("localhost:3000-3999", "127.0.0.1:4000"));
  assert.ok(!matches("localhost:3000-3999", "127.0.0.1"));
});

Deno.test("`networkEntryMatches()` matches *.github.com at any depth, but not github.com or evilgithub.com", () => {
  assert.ok(matches("*.github.com", "api.github.com:443"));
  assert.ok(matches("*.github.com", "a.b.github.com:443"));
  assert.ok(!matches("*.github.com", "github.com:443"));
  assert.ok(!matches("*.github.com", "evilgithub.com:443"));
  assert.ok(!matches("*.github.com", "github.com.evil.com:443"));
});

Deno.test("`networkEntryMatches()` matches host entries through the names an address resolves to", () => {
  assert.ok(matches("api.github.com", "140.82.112.6:443", ["api.github.com"]));
  assert.ok(matches("api.github.com:443", "140.82.112.6:443", ["API.github.com"]));
  assert.ok(!matches("api.github.com:443", "140.82.112.6:80", ["api.github.com"]));
  assert.ok(!matches("api.github.com", "140.82.112.6:443", ["github.com"]));
  assert.ok(matches("*.github.com", "140.82.112.6:443", ["api.github.com"]));
  assert.ok(!matches("*.github.com", "140.82.112.6:443", ["github.com"]));
});

Deno.test("`networkEntryMatches()` matches a host by name exactly, not by suffix", () => {
  assert.ok(matches("github.com", "github.com:443"));
  assert.ok(!matches("github.com", "api.github.com:443"));
  assert.ok(!matches("github.com", "notgithub.com:443"));
});

Deno.test("`networkEntryMatches()` matches port ranges inclusively and needs a port", () => {
  assert.ok(matches(":8000-8999", "1.2.3.4:8000"));
  assert.ok(matches(":8000-8999", "1.2.3.4:8999"));
  assert.ok(matches(":8000-8999", "[::1]:8500"));
  assert.ok(!matches(":8000-8999", "1.2.3.4:7999"));
  assert.ok(!matches(":8000-8999", "1.2.3.4:9000"));
  assert.ok(!matches(":5432", "db.internal"));
  assert.ok(matches(":5432", "db.internal:5432"));
});

Deno.test("`networkEntryMatches()` matches CIDR blocks, with and without ports", () => {
  assert.ok(matches("10.0.0.0/8", "10.2.3.4:22"));
  assert.ok(!matches("10.0.0.0/8", "11.2.3.4:22"));
  assert.ok(matches("10.0.0.0/8:5432", "10.2.3.4:5432"));
  assert.ok(!matches("10.0.0.0/8:5432", "10.2.3.4:5433"));
  assert.ok(matches("fc00::/7", "[fd00::1]:443"));
  assert.ok(!matches("fc00::/7", "[fe80::1]:443"));
  assert.ok(matches("10.0.0.0/8", "[::ffff:10.0.0.1]:443"));
  // A name is not an address: CIDR entries never match unresolved names.
  assert.ok(!matches("10.0.0.0/8", "intranet.local:80"));
});

Deno.test("`networkEntryMatches()` matches one address in either family", () => {
  assert.ok(matches("169.254.169.254", "169.254.169.254:80"));
  assert.ok(!matches("169.254.169.254", "169.254.169.253:80"));
  assert.ok(matches("::1", "[::1]:80"));
  assert.ok(matches("[::1]:8080", "[::1]:8080"));
  assert.ok(!matches("[::1]:8080", "[::1]:8081"));
  assert.ok(matches("1.2.3.4", "[::ffff:1.2.3.4]:80"));
  assert.ok(matches("::ffff:1.2.3.4", "1.2.3.4:80"));
  assert.ok(!matches("::1", "0.0.0.1:80"));
});

Deno.test("`isLoopback()` covers 127.0.0.0/8 and ::1 only", () => {
  assert.ok(isLoopback(parseIp("127.1.2.3")));
  assert.ok(isLoopback(parseIp("::1")));
  assert.ok(!isLoopback(parseIp("::")));
  assert.ok(!isLoopback(parseIp("0.0.0.1")));
  assert.ok(!isLoopback(null));
});

Deno.test("`namedHosts()` lists the host names to resolve, without localhost or duplicates", () => {
  const entries: NetworkEntry[] = [
    "api.github.com:443",
    "API.github.com",
    "localhost:3000",
    "*.npmjs.org",
    "10.0.0.0/8",
    ":5432",
    "registry.npmjs.org",
  ].map(parseNetworkEntry);
  assert.deepEqual(namedHosts(entries), ["api.github.com", "registry.npmjs.org"]);
});

// --- normalizePath ------------------------------------------------------------------------

Deno.test("`normalizePath()` resolves . and .. and repeated slashes in absolute paths", () => {
  const cases: [string, string][] = [
    ["/work/project/../../home/agent/.ssh/id_rsa", "/home/agent/.ssh/id_rsa"],
    ["/work/./project//src/./a.ts", "/work/project/src/a.ts"],
    ["/../../etc/passwd", "/etc/passwd"],
    ["/a/b/..", "/a"],
    ["/a/b/.", "/a/b"],
    ["/a/..", "/"],
    ["/", "/"],
    ["//", "/"],
  ];
  for (const [input, expected] of cases) assert.equal(normalizePath(input), expected, input);
});

Deno.test("`normalizePath()` leaves dot files and dotted names alone", () => {
  for (const path of ["/work/project/.env", "/a/..b/c", "/a/b../c", "/a/.../c", "/home/a/.ssh"]) {
    assert.equal(normalizePath(path), path);
  }
});

Deno.test("`normalizePath()` keeps a relative path relative", () => {
  assert.equal(normalizePath("./a/../b.yaml"), "b.yaml");
  assert.equal(normalizePath("../a/./b"), "../a/b");
  assert.equal(normalizePath("a/../.."), "..");
  assert.equal(normalizePath("a/.."), ".");
  assert.equal(normalizePath(""), ".");
});

Deno.test("parseNetworkEntry() reads unix socket paths and abstract names, and refuses a relative one", () => {
  const docker = parseNetworkEntry("unix:/run/user/*/docker.sock");
  assert.equal(docker.type, "unix");
  assert.ok(networkEntryMatches(docker, parseEndpoint("unix:/run/user/1000/docker.sock")));
  assert.ok(!networkEntryMatches(docker, parseEndpoint("unix:/run/user/1000/other.sock")));
  assert.ok(!networkEntryMatches(docker, parseEndpoint("127.0.0.1:80")));
  assert.ok(!networkEntryMatches(parseNetworkEntry("*"), parseEndpoint("unix:/run/x.sock")));
  const abstract = parseNetworkEntry("unix:@/tmp/.X11-unix/X0");
  assert.ok(networkEntryMatches(abstract, parseEndpoint("unix:@/tmp/.X11-unix/X0")));
  assert.throws(() => parseNetworkEntry("unix:run/x.sock"), /unix:\/absolute\/path/);
});
