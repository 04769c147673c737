/**
 * Test helpers for the outputs: decided events, and a real loopback HTTP server that records
 * what it receives and answers as each test says.
 *
 * @module
 */

import { parseConfig } from "../config/mod.ts";
import type { OutputsConfig } from "../config/mod.ts";
import { type AgentEvent, createUlid } from "../events/mod.ts";

const ulid = createUlid();

/** A valid decided event; `overrides` replace any field. */
export function makeEvent(overrides: Partial<AgentEvent> = {}): AgentEvent {
  return {
    id: ulid(),
    ts: new Date().toISOString(),
    session: "01JTESTSESSION0000000000AA",
    agent: "test-agent",
    pid: 4242,
    ppid: 1,
    exe: "/usr/bin/cat",
    cmdline: ["cat", "/home/u/.ssh/id_rsa"],
    kind: "file.read",
    target: "/home/u/.ssh/id_rsa",
    detail: {},
    sensor: "fd",
    verdict: "deny",
    risk: 85,
    factors: [{ id: "credential_path", points: 85, reason: "reads an SSH key" }],
    rule: "files.read.deny",
    response: "pause",
    ...overrides,
  };
}

/** One request the server received. */
export interface Received {
  method: string;
  path: string;
  headers: Headers;
  /** The body parsed as JSON. */
  body: unknown;
  /** `performance.now()` when it arrived. */
  at: number;
}

/**
 * How the server answers request number `index` (0-based). `closing` aborts when the server
 * closes, so that an answer held back ends with the test.
 */
export type Answer = (
  request: Request,
  index: number,
  closing: AbortSignal,
) => Response | Promise<Response>;

/** A loopback HTTP server that records every request. */
export interface TestServer {
  /** `http://127.0.0.1:PORT`. */
  origin: string;
  received: Received[];
  /** Stops the server (in-flight answers are cut). */
  close(): Promise<void>;
}

/** Starts a server on 127.0.0.1 and a free port. */
export function startServer(answer: Answer = () => new Response("{}")): TestServer {
  const received: Received[] = [];
  const controller = new AbortController();
  const closing = new AbortController();
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    signal: controller.signal,
    onListen: () => {},
  }, async (request) => {
    const url = new URL(request.url);
    const text = await request.text();
    const index = received.length;
    received.push({
      method: request.method,
      path: url.pathname,
      headers: request.headers,
      body: text === "" ? null : JSON.parse(text),
      at: performance.now(),
    });
    return await answer(request, index, closing.signal);
  });
  return {
    origin: `http://127.0.0.1:${server.addr.port}`,
    received,
    async close() {
      closing.abort();
      controller.abort();
      await server.finished;
    },
  };
}

/** Waits `ms`, or less if the server closes. */
export function hold(closing: AbortSignal, ms: number): Promise<void> {
  return new Promise((resolve) => {
    if (closing.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      closing.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    closing.addEventListener("abort", done, { once: true });
  });
}

/** Polls until `check` is true, failing after `ms`. */
export async function until(check: () => boolean, what: string, ms = 5_000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Builds an `outputs` section from YAML, through the real config loader (defaults filled). */
export function outputsFrom(yaml: string, env: Record<string, string> = {}): OutputsConfig {
  return parseConfig(yaml, { file: "test.yaml", env }).outputs;
}
