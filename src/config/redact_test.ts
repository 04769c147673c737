import assert from "node:assert/strict";
import { redactUrl } from "./redact.ts";

Deno.test("redactUrl() hides user names, passwords and secret query values, and keeps the rest", () => {
  assert.equal(
    redactUrl("postgres://sentry:hunter2@db.internal:5432/sentry?sslmode=require&password=pw2"),
    "postgres://sentry:***@db.internal:5432/sentry?sslmode=require&password=***",
  );
  assert.equal(
    redactUrl("http://tok3n:x@otel.example/v1/logs", { userinfo: "hide" }),
    "http://***:***@otel.example/v1/logs",
  );
  assert.equal(
    redactUrl("https://otel.example/v1/logs?dd-api-key=abc&region=eu&access_token=t"),
    "https://otel.example/v1/logs?dd-api-key=***&region=eu&access_token=***",
  );
  assert.equal(redactUrl("http://127.0.0.1:4318/v1/logs"), "http://127.0.0.1:4318/v1/logs");
  assert.equal(redactUrl("not a url"), null);
});
