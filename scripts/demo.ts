// deno-lint-ignore-file no-console
/**
 * The demo: replays a recorded coding-agent session against the coding-agent template and
 * prints each decision. Run: deno task demo
 * @module
 */
import { fileURLToPath } from "node:url";
import { runCli } from "../src/cli/mod.ts";

const sample = fileURLToPath(new URL("../tests/fixtures/sample_actions.jsonl", import.meta.url));
const workspace = await Deno.makeTempDir({ prefix: "sentry-demo-" });
console.log(`$ sentry policy test coding-agent ${sample} --workspace ${workspace}\n`);
const code = await runCli(["policy", "test", "coding-agent", sample, "--workspace", workspace]);
await Deno.remove(workspace, { recursive: true });
Deno.exit(code);
