/**
 * `GET /v1/events/:id/explain`: why a journaled event got its verdict, for the dashboard's event
 * detail. The same explanation as `sentry explain`, against the session's policy.
 *
 * @module
 */

import { Hono } from "hono";
import { configDir } from "../platform/mod.ts";
import { explainJournaledEvent, PolicyError } from "../policy/mod.ts";
import { policyHash } from "../session/mod.ts";
import { HttpError } from "./errors.ts";
import type { ApiReader } from "./reader.ts";

/** What the explain route reads. */
export interface ExplainDeps {
  /** The journal's reads the route needs. */
  reader: Pick<Required<ApiReader>, "getEvent" | "getSession" | "policyReloads">;
  /** The data directory: Sentry's own, which the guard keeps from the agent. */
  dataDir: string;
  /** The environment policies expand against (`HOME`, variables); defaults to the process's. */
  env?: Readonly<Record<string, string>>;
}

/**
 * The explain route. Only a session that ran a built-in template is explained here: the journal
 * keeps a policy's name, not its file, and a path here would let the API read any file Sentry
 * can. Other sessions get a 409 that points at `sentry explain --policy FILE`.
 */
export function explainRoutes(deps: ExplainDeps): Hono {
  const app = new Hono();
  app.get("/v1/events/:id/explain", async (c) => {
    const id = c.req.param("id");
    if (!/^[0-9A-HJKMNP-TV-Z]{26}$/i.test(id)) {
      throw new HttpError(400, `Invalid event id "${id}": must be a ULID`, { field: "id" });
    }
    const event = await deps.reader.getEvent(id);
    if (event === undefined) throw new HttpError(404, `No event "${id}"`, { field: "id" });
    const session = await deps.reader.getSession(event.session);
    const env = deps.env ?? Deno.env.toObject();
    const guarded = [deps.dataDir];
    try {
      guarded.push(configDir(env));
    } catch {
      // No HOME: only the data directory is guarded, as the session's own guard would say.
    }
    try {
      return c.json(
        await explainJournaledEvent(event, {
          session,
          allowFiles: false,
          home: env["HOME"] ?? "/",
          env,
          guarded,
          cwd: Deno.cwd(),
          reloads: await deps.reader.policyReloads(session.id),
          hashOf: policyHash,
        }),
      );
    } catch (error) {
      if (error instanceof PolicyError) {
        throw new HttpError(409, `${error.message}: explain it with sentry explain --policy FILE`, {
          cause: error,
        });
      }
      throw error;
    }
  });
  return app;
}
