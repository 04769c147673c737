import type { WebhookConfig } from "../config/mod.ts";
import type { AgentEvent } from "../events/mod.ts";
import { postJson } from "./_http.ts";
import { Lane } from "./_lane.ts";
import { describeProcess, summarize, truncate } from "./summary.ts";
import { meetsThreshold } from "./threshold.ts";
import { TokenBucket } from "./token_bucket.ts";

/** What every webhook message says about its sender. */
export interface MessageContext {
  /** This host's name. */
  host: string;
  /** Sentry's version. */
  version: string;
  /** Alerts suppressed by the rate limit since the previous message. */
  suppressed: number;
}

/**
 * The `json` format: Sentry's envelope around one decided event. `event` is null in a summary
 * message, sent when alerts were suppressed and no later alert carried their count.
 */
export interface WebhookJsonMessage {
  sentry: { version: string; host: string };
  event: AgentEvent | null;
  /** Alerts over the rate limit since the previous message, not sent on their own. */
  suppressed: number;
}

/** A Slack Block Kit text object. */
export interface SlackText {
  type: "plain_text" | "mrkdwn";
  text: string;
}

/** The Slack blocks Sentry sends. */
export type SlackBlock =
  | { type: "header"; text: SlackText }
  | { type: "section"; text: SlackText; fields?: SlackText[] }
  | { type: "context"; elements: SlackText[] };

/** The `slack` format: a Slack incoming-webhook message, `text` being the notification. */
export interface SlackMessage {
  text: string;
  blocks: SlackBlock[];
}

/** Builds the `json` format's message. */
export function jsonMessage(event: AgentEvent | null, context: MessageContext): WebhookJsonMessage {
  return {
    sentry: { version: context.version, host: context.host },
    event,
    suppressed: context.suppressed,
  };
}

/** Escapes the three characters Slack's mrkdwn treats as control characters. */
function escape(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}

/** Text inside a code span: escaped, with backticks that would end it replaced. */
function code(text: string, max: number): string {
  return `\`${escape(truncate(text, max).replaceAll("`", "'"))}\``;
}

function suppressedLine(n: number): string {
  return `${n} more ${n === 1 ? "alert" : "alerts"} suppressed by the rate limit`;
}

/**
 * Builds the `slack` format's message: a header with the response and risk, the action, a
 * field per fact (verdict, risk, rule, response, agent, session, process, host), and the
 * count of alerts the rate limit suppressed. Texts are cut to Slack's limits.
 */
export function slackMessage(event: AgentEvent | null, context: MessageContext): SlackMessage {
  if (event === null) {
    const line = `Sentry on ${context.host}: ${suppressedLine(context.suppressed)}`;
    return {
      text: escape(line),
      blocks: [{ type: "section", text: { type: "mrkdwn", text: escape(line) } }],
    };
  }
  const mark = (label: string, value: string): SlackText => ({
    type: "mrkdwn",
    text: `*${label}*\n${value}`,
  });
  const more = context.suppressed > 0 ? ` (${suppressedLine(context.suppressed)})` : "";
  const blocks: SlackBlock[] = [
    {
      type: "header",
      text: {
        type: "plain_text",
        text: truncate(
          `Sentry: ${
            event.verdict === "deny" ? "denied" : "allowed"
          } ${event.kind}, ${event.response} (risk ${event.risk})`,
          150,
        ),
      },
    },
    {
      type: "section",
      text: { type: "mrkdwn", text: `*${event.kind}* ${code(event.target, 2_000)}` },
      fields: [
        mark("Verdict", event.verdict),
        mark("Risk", String(event.risk)),
        mark("Rule", code(event.rule, 200)),
        mark("Response", event.response),
        mark("Agent", escape(truncate(event.agent, 200))),
        mark("Session", code(event.session, 100)),
        mark("Process", escape(describeProcess(event))),
        mark("Host", escape(truncate(context.host, 200))),
      ],
    },
    {
      type: "context",
      elements: [{
        type: "mrkdwn",
        text: `${event.ts} · event ${code(event.id, 40)} · Sentry ${escape(context.version)}`,
      }],
    },
  ];
  if (context.suppressed > 0) {
    blocks.push({
      type: "context",
      elements: [{ type: "mrkdwn", text: `_${suppressedLine(context.suppressed)}_` }],
    });
  }
  return {
    text: escape(truncate(`Sentry on ${context.host}: ${summarize(event)}${more}`, 3_000)),
    blocks,
  };
}

/** What a {@link WebhookLane} needs besides its configuration. */
export interface WebhookLaneOptions {
  name: string;
  host: string;
  version: string;
  now: () => number;
  random: () => number;
  client: Deno.HttpClient;
  warn: (message: string) => void;
}

/**
 * One webhook: a message per alert at or above the threshold, sent in order, one at a time,
 * with retries. Alerts over the rate limit are counted and their count rides on the next
 * message; when no alert follows, a summary message carries it once a token is back.
 */
export class WebhookLane extends Lane {
  readonly #config: WebhookConfig;
  readonly #options: WebhookLaneOptions;
  readonly #bucket: TokenBucket;
  #suppressed = 0;
  #finalSummaryTried = false;

  /** Builds the lane; `start()` starts sending. */
  constructor(config: WebhookConfig, options: WebhookLaneOptions) {
    super({
      name: options.name,
      kind: "webhook",
      queueSize: config.queue_size,
      batchSize: 1,
      flushMs: 0,
      warn: options.warn,
    });
    this.#config = config;
    this.#options = options;
    this.#bucket = new TokenBucket({
      perMinute: config.rate_limit.per_minute,
      burst: config.rate_limit.burst,
      now: options.now,
    });
  }

  protected override accepts(event: AgentEvent): boolean {
    if (this.#config.min_risk === undefined && this.#config.min_response === undefined) {
      return meetsThreshold(event, { min_response: "alert" });
    }
    return meetsThreshold(event, this.#config);
  }

  protected override admit(_event: AgentEvent): boolean {
    if (this.#bucket.take()) return true;
    this.#suppressed++;
    this.counters.rateLimited++;
    this.warnOnce(
      "rate",
      `output "${this.name}": over ${this.#config.rate_limit.per_minute} alerts a minute, suppressing (counted in the next message)`,
    );
    return false;
  }

  protected override idleIn(closing: boolean): number | null {
    if (this.#suppressed === 0) return null;
    if (closing) return this.#finalSummaryTried ? null : 0;
    return this.#bucket.msUntilToken();
  }

  protected override async idle(closing: boolean): Promise<void> {
    // At shutdown the summary goes out whatever the bucket says: it is the last message.
    if (closing) this.#finalSummaryTried = true;
    else if (!this.#bucket.take()) return;
    await this.#deliver(null);
  }

  protected override async send(batch: AgentEvent[]): Promise<void> {
    for (const event of batch) await this.#deliver(event);
  }

  async #deliver(event: AgentEvent | null): Promise<void> {
    const suppressed = this.#suppressed;
    const context = { host: this.#options.host, version: this.#options.version, suppressed };
    const message = this.#config.format === "slack"
      ? slackMessage(event, context)
      : jsonMessage(event, context);
    const result = await postJson(JSON.stringify(message), {
      url: this.#config.url,
      headers: this.#config.headers,
      timeoutMs: this.#config.timeout_ms,
      maxRetries: this.#config.max_retries,
      backoffMs: this.#config.retry_backoff_ms,
      retryable: (status) => status === 429 || status >= 500,
      signal: this.abort.signal,
      random: this.#options.random,
      client: this.#options.client,
      onRetry: () => this.counters.retries++,
    });
    if (result.ok) {
      if (event !== null) this.counters.sent++;
      this.#suppressed -= suppressed;
      return;
    }
    if (event !== null) this.counters.failed++;
    this.warnOnce("failed", `output "${this.name}": delivery failed: ${result.error}`);
  }
}
