/**
 * The OpenAPI 3.1 document served at `/v1/openapi.json`, generated from the same zod schemas
 * that validate the requests and shape the responses.
 *
 * @module
 */

import { z } from "zod";
import { AgentEvent } from "../events/mod.ts";
import { VERSION } from "../version.ts";
import { PolicyReloadBody, PolicyReloadResultBody } from "./control.ts";
import {
  ControlResult,
  ErrorBody,
  EventPage,
  EventsQuery,
  Health,
  LocalHostList,
  PolicyDetail,
  PolicyList,
  RollbackBody,
  RollbackResultBody,
  SessionDetail,
  SessionList,
  StreamQuery,
  StreamServer,
} from "./schemas.ts";

type Json = Record<string, unknown>;

function schema(s: z.ZodType, io: "input" | "output" = "output"): Json {
  const { $schema: _, ...rest } = z.toJSONSchema(s, { io, unrepresentable: "any" }) as Json;
  return rest;
}

function json(s: z.ZodType, description: string): Json {
  return { description, content: { "application/json": { schema: schema(s) } } };
}

function queryParameters(s: z.ZodObject): Json[] {
  return Object.entries(s.shape).map(([name, field]) => {
    const fieldSchema = schema(field as z.ZodType, "input");
    return {
      name,
      in: "query",
      required: false,
      ...(typeof fieldSchema["description"] === "string"
        ? { description: fieldSchema["description"] }
        : {}),
      schema: fieldSchema,
    };
  });
}

const SESSION_ID = {
  name: "id",
  in: "path",
  required: true,
  description: "A session id, a unique id prefix, or `last`",
  schema: { type: "string" },
};

const ERRORS = {
  "400": json(ErrorBody, "Malformed input; `field` names it"),
  "401": json(ErrorBody, "Missing or wrong bearer token"),
  "421": json(ErrorBody, "The Host header is not this server's"),
  "500": json(ErrorBody, "An internal error"),
};

function control(action: string, summary: string): Json {
  return {
    post: {
      operationId: `${action}Session`,
      summary,
      parameters: [SESSION_ID],
      responses: {
        "200": json(ControlResult, "What was done to each process"),
        "404": json(ErrorBody, "No such session"),
        ...ERRORS,
      },
    },
  };
}

/** Builds the OpenAPI document. */
export function openApiDocument(): Json {
  return {
    openapi: "3.1.0",
    info: {
      title: "Sentry local API",
      version: VERSION,
      description: "Watch and control AI agents. Every route but /health needs the bearer " +
        "token that `sentry token` prints.",
    },
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
      schemas: {
        AgentEvent: schema(AgentEvent),
        Error: schema(ErrorBody),
        StreamServer: schema(StreamServer),
      },
    },
    security: [{ bearer: [] }],
    paths: {
      "/health": {
        get: {
          operationId: "health",
          summary: "Version, uptime and sensors",
          security: [],
          responses: { "200": json(Health, "Sentry is up") },
        },
      },
      "/v1/sessions": {
        get: {
          operationId: "listSessions",
          summary: "Sessions, the most recently started first",
          parameters: [{
            name: "limit",
            in: "query",
            required: false,
            schema: { type: "string", pattern: "^\\d+$" },
          }, {
            name: "host",
            in: "query",
            required: false,
            description: "Only sessions of this host: its name, or on a collector its host id",
            schema: { type: "string" },
          }],
          responses: { "200": json(SessionList, "The sessions"), ...ERRORS },
        },
      },
      "/v1/hosts": {
        get: {
          operationId: "listHosts",
          summary: "The hosts the journal's sessions name, with their counts (a collector lists " +
            "the hosts that upload instead, without `collector: false`)",
          responses: { "200": json(LocalHostList, "The hosts"), ...ERRORS },
        },
      },
      "/v1/sessions/{id}": {
        get: {
          operationId: "getSession",
          summary: "A session with its responses and sensors",
          parameters: [SESSION_ID],
          responses: {
            "200": json(SessionDetail, "The session"),
            "404": json(ErrorBody, "No such session"),
            ...ERRORS,
          },
        },
      },
      "/v1/sessions/{id}/events": {
        get: {
          operationId: "listEvents",
          summary: "A session's events, filtered, one page at a time",
          parameters: [SESSION_ID, ...queryParameters(EventsQuery)],
          responses: {
            "200": json(EventPage, "One page of events"),
            "404": json(ErrorBody, "No such session"),
            ...ERRORS,
          },
        },
      },
      "/v1/events/stream": {
        get: {
          operationId: "streamEvents",
          summary: "Live AgentEvents as Server-Sent Events; send Last-Event-ID to resume",
          parameters: [
            ...queryParameters(StreamQuery),
            {
              name: "Last-Event-ID",
              in: "header",
              required: false,
              schema: { type: "string" },
            },
          ],
          responses: {
            "200": {
              description: "An event stream: `event: event` messages, whose `id:` is the event " +
                "id and `data:` an AgentEvent. The API of `sentry run` or `attach` first sends " +
                "`event: server` and, when it stops with its session, `event: closing` (data: " +
                "StreamServer in components)",
              content: { "text/event-stream": { schema: schema(AgentEvent) } },
            },
            ...ERRORS,
          },
        },
      },
      "/v1/sessions/{id}/pause": control("pause", "Stop the session's processes (SIGSTOP)"),
      "/v1/sessions/{id}/resume": control("resume", "Resume the session's processes"),
      "/v1/sessions/{id}/kill": control("kill", "Terminate the session's processes"),
      "/v1/sessions/{id}/rollback": {
        post: {
          operationId: "rollbackSession",
          summary: "Restore the session's protected files to its snapshot, or list the plan",
          parameters: [SESSION_ID],
          requestBody: {
            required: false,
            content: { "application/json": { schema: schema(RollbackBody, "input") } },
          },
          responses: {
            "200": json(RollbackResultBody, "What was, or would be, restored"),
            "404": json(ErrorBody, "No such session"),
            "409": json(ErrorBody, "The session has no snapshot"),
            ...ERRORS,
          },
        },
      },
      "/v1/sessions/{id}/policy/reload": {
        post: {
          operationId: "reloadSessionPolicy",
          summary:
            "Apply a new policy to a live session's next events (a template, an absolute file, YAML text, or its own read again)",
          parameters: [SESSION_ID],
          requestBody: {
            required: false,
            content: { "application/json": { schema: schema(PolicyReloadBody, "input") } },
          },
          responses: {
            "200": json(PolicyReloadResultBody, "The reload: applied, or refused with the reason"),
            "404": json(ErrorBody, "No such session"),
            "409": json(ErrorBody, "The session is not live on this host, or did not answer"),
            ...ERRORS,
          },
        },
      },
      "/v1/events/{id}/explain": {
        get: {
          operationId: "explainEvent",
          summary:
            "Why an event got its verdict: the entries that matched in precedence order, with file and line",
          parameters: [{ name: "id", in: "path", required: true, schema: { type: "string" } }],
          responses: {
            "200": {
              description:
                "The event, the policy and its files, the explanation and warnings (as sentry explain --json)",
              content: { "application/json": {} },
            },
            "404": json(ErrorBody, "No such event"),
            "409": json(ErrorBody, "The session's policy is not a built-in template"),
            ...ERRORS,
          },
        },
      },
      "/v1/policies": {
        get: {
          operationId: "listPolicies",
          summary: "The built-in policy templates",
          responses: { "200": json(PolicyList, "The templates"), ...ERRORS },
        },
      },
      "/v1/policies/{name}": {
        get: {
          operationId: "getPolicy",
          summary: "A template's YAML and resolved policy",
          parameters: [{ name: "name", in: "path", required: true, schema: { type: "string" } }],
          responses: {
            "200": json(PolicyDetail, "The template"),
            "404": json(ErrorBody, "No such template"),
            ...ERRORS,
          },
        },
      },
      "/metrics": {
        get: {
          operationId: "metrics",
          summary: "Prometheus metrics",
          responses: {
            "200": { description: "Prometheus text", content: { "text/plain": {} } },
            ...ERRORS,
          },
        },
      },
      "/v1/openapi.json": {
        get: {
          operationId: "openapi",
          summary: "This document",
          responses: { "200": { description: "OpenAPI 3.1", content: { "application/json": {} } } },
        },
      },
    },
  };
}
