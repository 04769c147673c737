import assert from "node:assert/strict";
import {
  CRON_BEGIN,
  CRON_END,
  cronBlock,
  cronFields,
  describeWhen,
  type EntrySpec,
  findCronBlock,
  parseAt,
  parseEvery,
  replaceCronBlock,
  scheduleEnv,
  shellQuote,
  systemdQuote,
  systemdUnits,
} from "./mod.ts";

const SPEC: EntrySpec = {
  command: ["/opt/sentry/bin/sentry", "audit"],
  env: { HOME: "/home/ann", SENTRY_HOME: "/data/50% off" },
  when: { every: 15 * 60_000 },
  logFile: "/data/50% off/audit.log",
};

Deno.test("parseEvery() and parseAt() take what a scheduler can keep and refuse the rest", () => {
  assert.equal(parseEvery("15m"), 900_000);
  assert.equal(parseEvery("1d"), 86_400_000);
  assert.equal(parseEvery("90s"), 90_000);
  for (const bad of ["30s", "8d", "15", "1.5h", "m", ""]) {
    assert.throws(() => parseEvery(bad), RangeError);
  }
  assert.deepEqual(parseAt("2:05"), { hour: 2, minute: 5 });
  assert.deepEqual(parseAt("23:59"), { hour: 23, minute: 59 });
  for (const bad of ["24:00", "12:60", "1230", "7pm", ""]) {
    assert.throws(() => parseAt(bad), RangeError);
  }
});

Deno.test("cronFields() keeps divisors of an hour and a day, and refuses intervals cron would drift on", () => {
  assert.equal(cronFields({ every: 60_000 }), "* * * * *");
  assert.equal(cronFields({ every: 5 * 60_000 }), "*/5 * * * *");
  assert.equal(cronFields({ every: 3_600_000 }), "0 * * * *");
  assert.equal(cronFields({ every: 6 * 3_600_000 }), "0 */6 * * *");
  assert.equal(cronFields({ every: 86_400_000 }), "0 0 * * *");
  assert.equal(cronFields({ at: { hour: 2, minute: 30 } }), "30 2 * * *");
  for (const every of [7 * 60_000, 90_000, 5 * 3_600_000, 2 * 86_400_000]) {
    assert.throws(() => cronFields({ every }), RangeError, describeWhen({ every }));
  }
});

Deno.test("shellQuote() leaves plain words and single-quotes the rest so that sh reads them back", async () => {
  assert.equal(shellQuote("/usr/bin/deno"), "/usr/bin/deno");
  const words = ["a b", "it's", `"$HOME"`, "x;rm -rf /", "*", "\\n", ""];
  const script = `printf '%s\\n' ${words.map(shellQuote).join(" ")}`;
  const out = await new Deno.Command("/bin/sh", { args: ["-c", script], stdout: "piped" }).output();
  assert.deepEqual(new TextDecoder().decode(out.stdout).split("\n").slice(0, -1), words);
});

Deno.test("cronBlock() escapes % and replaceCronBlock() replaces or removes only Sentry's block", () => {
  const block = cronBlock(SPEC);
  const line = block.split("\n")[1] ?? "";
  assert.ok(line.startsWith("*/15 * * * * HOME=/home/ann SENTRY_HOME='/data/50\\% off' "), line);
  assert.doesNotMatch(line, /[^\\]%/);
  const user = "MAILTO=x\n5 4 * * * /bin/backup\n";
  const installed = replaceCronBlock(user, block);
  assert.equal(installed, user + block);
  assert.equal(replaceCronBlock(installed, block), installed, "idempotent");
  const daily = cronBlock({ ...SPEC, when: { at: { hour: 1, minute: 0 } } });
  const moved = replaceCronBlock(`${block}# after\n`, daily);
  assert.equal(moved, `${daily}# after\n`, "replaced in place");
  assert.equal(replaceCronBlock(installed, null), user);
  assert.equal(replaceCronBlock(user, null), user);
  assert.equal(replaceCronBlock("", null), "");
  assert.equal(findCronBlock(installed), line);
  assert.equal(findCronBlock(user), null);
  assert.ok(block.startsWith(CRON_BEGIN) && block.trimEnd().endsWith(CRON_END));
});

Deno.test("systemdQuote() doubles % everywhere and $ in ExecStart only", () => {
  assert.equal(systemdQuote("/usr/bin/x", { exec: true }), "/usr/bin/x");
  assert.equal(systemdQuote("a b", { exec: true }), '"a b"');
  assert.equal(systemdQuote('50% "$x"', { exec: true }), '"50%% \\"$$x\\""');
  assert.equal(systemdQuote('K=50% "$x"', { exec: false }), '"K=50%% \\"$x\\""');
  const units = systemdUnits(SPEC, { system: false });
  assert.match(
    units["sentry-audit.service"] ?? "",
    /^Environment="SENTRY_HOME=\/data\/50%% off"$/m,
  );
  assert.doesNotMatch(units["sentry-audit.service"] ?? "", /network-online/);
  assert.match(
    systemdUnits(SPEC, { system: true })["sentry-audit.service"] ?? "",
    /network-online/,
  );
});

Deno.test("scheduleEnv() carries what locates Sentry's data, never the API key, and DENO_DIR only under deno run", () => {
  const env = {
    HOME: "/home/ann",
    SENTRY_HOME: "",
    XDG_DATA_HOME: "/x",
    SENTRY_API_KEY: "sk_secret",
    TERM: "xterm",
    PATH: "/usr/bin:/bin",
  };
  assert.deepEqual(scheduleEnv(env, { compiled: true, denoDir: "/c/deno" }), {
    HOME: "/home/ann",
    XDG_DATA_HOME: "/x",
    PATH: "/usr/bin:/bin",
  });
  assert.equal(scheduleEnv(env, { compiled: false, denoDir: "/c/deno" })["DENO_DIR"], "/c/deno");
});
