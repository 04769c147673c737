import assert from "node:assert/strict";
import { join } from "node:path";
import { acquireAuditLock, AuditLockedError } from "./mod.ts";

Deno.test("acquireAuditLock() refuses a live owner, takes over a dead one, and releases only its own lock", () => {
  const dir = Deno.makeTempDirSync({ prefix: "sentry_lock_" });
  try {
    const path = join(dir, "audit.lock");
    const first = acquireAuditLock(path, { pid: 111, host: "h", isRunning: () => true });
    assert.match(Deno.readTextFileSync(path), /^111 \S* h\n$/);
    assert.throws(
      () => acquireAuditLock(path, { pid: 222, host: "h", isRunning: () => true }),
      (e: unknown) => e instanceof AuditLockedError && e.pid === 111,
    );
    // Another host's lock (a shared home) cannot be judged from here: it holds.
    assert.throws(
      () => acquireAuditLock(path, { pid: 222, host: "other", isRunning: () => false }),
      AuditLockedError,
    );
    const second = acquireAuditLock(path, { pid: 222, host: "h", isRunning: () => false });
    assert.match(Deno.readTextFileSync(path), /^222 /);
    first.release(); // Not its lock any more: left alone.
    assert.match(Deno.readTextFileSync(path), /^222 /);
    second.release();
    assert.throws(() => Deno.statSync(path), Deno.errors.NotFound);
    second.release();
    // Garbage in the lock file is stale.
    Deno.writeTextFileSync(path, "not a lock");
    acquireAuditLock(path, { pid: 333, host: "h", isRunning: () => true }).release();
    assert.deepEqual([...Deno.readDirSync(dir)], [], "no temporary file left");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
