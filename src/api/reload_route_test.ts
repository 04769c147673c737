import assert from "node:assert/strict";
import { join } from "node:path";
import type { ReloadResult } from "../session/mod.ts";
import { SESSION, world } from "./_testing.ts";
import type { PolicyReloadRequest, SessionControls } from "./control.ts";

/** Controls whose reload records what it was asked and answers as applied. */
function reloading(asked: PolicyReloadRequest[]): SessionControls {
  const fail = () => Promise.reject(new Error("not under test"));
  return {
    pause: fail,
    resume: fail,
    kill: fail,
    rollback: fail,
    reload(session, request) {
      asked.push(request);
      const result: ReloadResult = {
        session: session.id,
        outcome: "applied",
        policy: request.file ?? "coding-agent",
        by: "api",
        oldHash: "a".repeat(64),
        newHash: "b".repeat(64),
        reason: null,
        fixed: ["pause.timeout and pause.on_timeout stay as started"],
      };
      return Promise.resolve(result);
    },
  };
}

function post(w: ReturnType<typeof world>, body: string): Promise<Response> {
  return w.request(`/v1/sessions/${SESSION}/policy/reload`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body,
  });
}

Deno.test("POST /v1/sessions/:id/policy/reload passes a template, an absolute file or the session's own, and answers in snake_case", async () => {
  const asked: PolicyReloadRequest[] = [];
  const w = world(0, { controls: reloading(asked) });
  try {
    for (
      const [body, file] of [
        ["{}", null],
        ['{"policy":"strict"}', "strict"],
        ['{"policy":"/etc/sentry/p.yaml"}', "/etc/sentry/p.yaml"],
      ] as const
    ) {
      const res = await post(w, body);
      assert.equal(res.status, 200, body);
      assert.deepEqual(asked.at(-1), { file });
      const json = await res.json();
      assert.deepEqual(Object.keys(json).sort(), [
        "by",
        "fixed",
        "new_hash",
        "old_hash",
        "outcome",
        "policy",
        "reason",
        "session",
      ]);
      assert.equal(json.old_hash, "a".repeat(64));
    }
  } finally {
    w.close();
  }
});

Deno.test("POST /v1/sessions/:id/policy/reload stages YAML text as a 0600 file in run/ and passes its path", async () => {
  const asked: PolicyReloadRequest[] = [];
  const w = world(0, { controls: reloading(asked) });
  try {
    const yaml = "name: sent\nextends: strict\n";
    const res = await post(w, JSON.stringify({ yaml }));
    assert.equal(res.status, 200);
    const file = join(w.dir, "run", `${SESSION}.api-policy.yaml`);
    assert.deepEqual(asked, [{ file }]);
    assert.equal(await Deno.readTextFile(file), yaml);
    assert.equal((await Deno.stat(file)).mode! & 0o777, 0o600);
  } finally {
    w.close();
  }
});

Deno.test("POST /v1/sessions/:id/policy/reload refuses a relative path, both fields, and unknown keys with 400", async () => {
  const asked: PolicyReloadRequest[] = [];
  const w = world(0, { controls: reloading(asked) });
  try {
    for (
      const [body, pattern] of [
        [
          '{"policy":"p.yaml"}',
          /Invalid policy "p\.yaml": give a template name or an absolute file path/,
        ],
        ['{"policy":"strict","yaml":"x: 1"}', /give policy or yaml, not both/],
        ['{"file":"/p.yaml"}', /file/],
      ] as const
    ) {
      const res = await post(w, body);
      assert.equal(res.status, 400, body);
      assert.match((await res.json()).error, pattern);
    }
    assert.deepEqual(asked, []);
    const missing = await w.request(`/v1/sessions/NOSUCH/policy/reload`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    assert.equal(missing.status, 404);
  } finally {
    w.close();
  }
});

Deno.test("POST /v1/sessions/:id/policy/reload from another process is a 409 when the session's Sentry is not live here", async () => {
  const w = world(0, { realControls: true });
  try {
    // The seeded session is `running` in the journal, but no Sentry keeps its pids file.
    const res = await post(w, "{}");
    assert.equal(res.status, 409);
    assert.match((await res.json()).error, /Cannot reload the policy of session ".*": /);
  } finally {
    w.close();
  }
});
