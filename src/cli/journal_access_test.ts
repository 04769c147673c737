import assert from "node:assert/strict";
import { openJournal } from "../journal/mod.ts";
import { reconcileJournal } from "./journal_access.ts";
import { setSink } from "./output.ts";

Deno.test("reconcileJournal() brings a dead Sentry's session up to date, and when the journal cannot be written it warns and goes on", () => {
  const dir = Deno.makeTempDirSync({ prefix: "sentry_reconcile_" });
  const journal = openJournal(`${dir}/journal.db`, { hostname: Deno.hostname() });
  let err = "";
  const prev = setSink({ out: () => {}, err: (t) => err += t, color: false });
  try {
    // A session whose Sentry (a pid that cannot exist) is gone: marked crashed.
    journal.createSession({
      id: "01JRECONCILE00000000000001",
      agent: "ghost",
      command: ["ghost"],
      pid: null,
      kind: "run",
      policy: "default",
      mode: "monitor",
      workspace: dir,
      sentryPid: 2 ** 22 + 1,
    });
    reconcileJournal(journal, dir);
    assert.equal(journal.getSession("last").state, "crashed");
    assert.equal(err, "");
    // A journal that refuses the write (a full disk): the command still reads what it holds.
    const full = Object.create(journal, {
      reconcile: {
        value: () => {
          throw new Error("database or disk is full");
        },
      },
    });
    reconcileJournal(full, dir);
    assert.match(
      err,
      /^sentry: warning: the journal cannot be written \(database or disk is full\): sessions are shown as last journaled/,
    );
    assert.equal(err.trim().split("\n").length, 1, "one line");
  } finally {
    setSink(prev);
    journal.close();
    Deno.removeSync(dir, { recursive: true });
  }
});
