import assert from "node:assert/strict";
import { join } from "node:path";
import { openJournal } from "../journal/mod.ts";
import {
  endRecordPath,
  endRecords,
  readEndRecord,
  reserveEndRecord,
  writeEndRecord,
} from "./end_record.ts";

async function withDir(fn: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sentry-end-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

const SESSION = {
  agent: "python3",
  command: ["python3", "agent.py"],
  pid: 4242,
  kind: "run" as const,
  policy: "default",
  mode: "alert",
  workspace: "/work",
};

Deno.test("a recorded end is journaled for a dead session instead of crashed, then removed", async () => {
  await withDir((dir) => {
    const journal = openJournal(join(dir, "journal.db"), { pid: 999_999 });
    try {
      journal.createSession({ id: "S_RECORDED", ...SESSION });
      journal.createSession({ id: "S_BLANK", ...SESSION });
      assert.ok(reserveEndRecord(dir, "S_RECORDED"));
      assert.ok(reserveEndRecord(dir, "S_BLANK"));
      assert.equal(Deno.statSync(endRecordPath(dir, "S_RECORDED")).mode! & 0o777, 0o600);
      assert.equal(readEndRecord(dir, "S_BLANK"), null, "a reserved record holds nothing");
      assert.ok(writeEndRecord(dir, "S_RECORDED", {
        state: "ended",
        endedAt: "2026-12-06T21:00:00.000Z",
        exitCode: 7,
        note: "the end was journaled late",
      }));
      const crashed = journal.reconcile(() => false, endRecords(dir));
      assert.deepEqual(crashed, ["S_BLANK"]);
      const recorded = journal.getSession("S_RECORDED");
      assert.equal(recorded.state, "ended");
      assert.equal(recorded.exitCode, 7);
      assert.equal(recorded.endedAt, "2026-12-06T21:00:00.000Z");
      assert.equal(recorded.note, "the end was journaled late");
      assert.equal(journal.getSession("S_BLANK").state, "crashed");
      assert.throws(() => Deno.statSync(endRecordPath(dir, "S_RECORDED")), Deno.errors.NotFound);
      // A dead session's blank record goes too: its Sentry will never write it.
      assert.throws(() => Deno.statSync(endRecordPath(dir, "S_BLANK")), Deno.errors.NotFound);
    } finally {
      journal.close();
    }
  });
});

Deno.test("a damaged or oversized record is not trusted", async () => {
  await withDir((dir) => {
    reserveEndRecord(dir, "S");
    Deno.writeTextFileSync(endRecordPath(dir, "S"), '{"state":"ended","rogue":1}');
    assert.equal(readEndRecord(dir, "S"), null, "unknown keys");
    Deno.writeTextFileSync(endRecordPath(dir, "S"), '{"state":"ended"');
    assert.equal(readEndRecord(dir, "S"), null, "not JSON");
    assert.equal(writeEndRecord(dir, "S", { note: "x".repeat(5000) }), false);
    assert.equal(writeEndRecord(dir, "NONE", { state: "ended" }), false, "no reserved record");
  });
});

const root = Deno.build.os === "linux" && Deno.uid() === 0;

Deno.test({
  name: `the end is written on a full disk, into the room reserved at start${
    root ? "" : " (skipped: needs root to mount a small tmpfs)"
  }`,
  ignore: !root,
  async fn() {
    await withDir(async (dir) => {
      const mount = async (args: string[]) => {
        const out = await new Deno.Command(args[0] as string, { args: args.slice(1) }).output();
        assert.ok(out.success, `${args.join(" ")} failed`);
      };
      await mount(["mount", "-t", "tmpfs", "-o", "size=256k", "sentry-end", dir]);
      try {
        assert.ok(reserveEndRecord(dir, "S"));
        // Fill the filesystem to the last block.
        const filler = await Deno.open(join(dir, "filler"), { write: true, create: true });
        try {
          const chunk = new Uint8Array(4096);
          for (;;) await filler.write(chunk);
        } catch (error) {
          assert.match(String(error), /No space left|ENOSPC/i);
        } finally {
          filler.close();
        }
        assert.throws(() => Deno.writeTextFileSync(join(dir, "other"), "x".repeat(8192)));
        assert.ok(writeEndRecord(dir, "S", { state: "ended", exitCode: 3 }));
        assert.deepEqual(readEndRecord(dir, "S"), { state: "ended", exitCode: 3 });
      } finally {
        await mount(["umount", "-l", dir]);
      }
    });
  },
});
