/**
 * A strict checker of OTLP/HTTP JSON logs requests, for the loopback receivers of the tests and
 * the benchmark. It follows the OTLP specification's "JSON Protobuf Encoding": lowerCamelCase
 * field names, 64-bit integers as decimal strings, enums as integers, `traceId` and `spanId` as
 * hex (not base64), and `AnyValue` as a oneof.
 *
 * @module
 */

const U64 = /^(0|[1-9]\d{0,19})$/;
const I64 = /^-?(0|[1-9]\d{0,18})$/;
const HEX32 = /^[0-9a-fA-F]{32}$/;
const HEX16 = /^[0-9a-fA-F]{16}$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

class Checker {
  readonly problems: string[] = [];

  fail(where: string, what: string): void {
    if (this.problems.length < 50) this.problems.push(`${where}: ${what}`);
  }

  /** Fails on any key outside `allowed` (a snake_case key or a typo is a wrong field). */
  fields(value: Json, where: string, allowed: readonly string[]): void {
    for (const key of Object.keys(value)) {
      if (!allowed.includes(key)) this.fail(where, `unknown field "${key}"`);
    }
  }

  array(value: unknown, where: string): unknown[] {
    if (value === undefined) return [];
    if (!Array.isArray(value)) {
      this.fail(where, "must be an array");
      return [];
    }
    return value;
  }

  object(value: unknown, where: string): Json | null {
    if (!isObject(value)) {
      this.fail(where, "must be an object");
      return null;
    }
    return value;
  }

  string(value: unknown, where: string): void {
    if (value !== undefined && typeof value !== "string") this.fail(where, "must be a string");
  }

  uint32(value: unknown, where: string): void {
    if (value === undefined) return;
    if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > 0xffffffff) {
      this.fail(where, "must be a uint32 number");
    }
  }

  /** fixed64 nanoseconds: a decimal string, as the JSON mapping writes 64-bit integers. */
  nanos(value: unknown, where: string): void {
    if (value === undefined) return;
    if (typeof value !== "string" || !U64.test(value)) {
      this.fail(where, `must be a uint64 as a decimal string, got ${JSON.stringify(value)}`);
    }
  }

  hexId(value: unknown, where: string, pattern: RegExp): void {
    if (value === undefined || value === "") return;
    if (typeof value !== "string" || !pattern.test(value)) {
      this.fail(where, `must be hex (${pattern === HEX32 ? 32 : 16} digits), not base64`);
    } else if (/^0+$/.test(value)) {
      this.fail(where, "an all-zero id is invalid: leave it out");
    }
  }

  anyValue(value: unknown, where: string): void {
    const v = this.object(value, where);
    if (v === null) return;
    const keys = Object.keys(v);
    if (keys.length > 1) return this.fail(where, `AnyValue is a oneof, got ${keys.join(", ")}`);
    const [key] = keys;
    const x = key === undefined ? undefined : v[key];
    switch (key) {
      case undefined:
        return; // The empty value.
      case "stringValue":
        return this.string(x, `${where}.stringValue`);
      case "boolValue":
        if (typeof x !== "boolean") this.fail(`${where}.boolValue`, "must be a boolean");
        return;
      case "intValue":
        if (typeof x !== "string" || !I64.test(x)) {
          this.fail(`${where}.intValue`, "must be an int64 as a decimal string");
        }
        return;
      case "doubleValue":
        if (typeof x !== "number") this.fail(`${where}.doubleValue`, "must be a number");
        return;
      case "bytesValue":
        if (typeof x !== "string" || !BASE64.test(x)) {
          this.fail(`${where}.bytesValue`, "must be base64");
        }
        return;
      case "arrayValue": {
        const a = this.object(x, `${where}.arrayValue`);
        if (a === null) return;
        this.fields(a, `${where}.arrayValue`, ["values"]);
        this.array(a["values"], `${where}.arrayValue.values`).forEach((item, i) =>
          this.anyValue(item, `${where}.arrayValue.values[${i}]`)
        );
        return;
      }
      case "kvlistValue": {
        const l = this.object(x, `${where}.kvlistValue`);
        if (l === null) return;
        this.fields(l, `${where}.kvlistValue`, ["values"]);
        this.keyValues(l["values"], `${where}.kvlistValue.values`);
        return;
      }
      default:
        this.fail(where, `unknown AnyValue field "${key}"`);
    }
  }

  /** A list of KeyValue: non-empty keys, unique within the list. */
  keyValues(value: unknown, where: string): void {
    const seen = new Set<string>();
    this.array(value, where).forEach((item, i) => {
      const kv = this.object(item, `${where}[${i}]`);
      if (kv === null) return;
      this.fields(kv, `${where}[${i}]`, ["key", "value"]);
      const key = kv["key"];
      if (typeof key !== "string" || key === "") {
        this.fail(`${where}[${i}].key`, "must be a non-empty string");
      } else if (seen.has(key)) {
        this.fail(`${where}[${i}].key`, `duplicate key "${key}"`);
      } else {
        seen.add(key);
      }
      this.anyValue(kv["value"] ?? {}, `${where}[${i}].value`);
    });
  }

  logRecord(value: unknown, where: string): void {
    const r = this.object(value, where);
    if (r === null) return;
    this.fields(r, where, [
      "timeUnixNano",
      "observedTimeUnixNano",
      "severityNumber",
      "severityText",
      "body",
      "attributes",
      "droppedAttributesCount",
      "flags",
      "traceId",
      "spanId",
      "eventName",
    ]);
    this.nanos(r["timeUnixNano"], `${where}.timeUnixNano`);
    this.nanos(r["observedTimeUnixNano"], `${where}.observedTimeUnixNano`);
    const severity = r["severityNumber"];
    if (
      severity !== undefined &&
      (typeof severity !== "number" || !Number.isInteger(severity) || severity < 0 ||
        severity > 24)
    ) {
      this.fail(`${where}.severityNumber`, "must be an enum integer from 0 to 24");
    }
    this.string(r["severityText"], `${where}.severityText`);
    this.string(r["eventName"], `${where}.eventName`);
    if (r["body"] !== undefined) this.anyValue(r["body"], `${where}.body`);
    this.keyValues(r["attributes"], `${where}.attributes`);
    this.uint32(r["droppedAttributesCount"], `${where}.droppedAttributesCount`);
    this.uint32(r["flags"], `${where}.flags`);
    this.hexId(r["traceId"], `${where}.traceId`, HEX32);
    this.hexId(r["spanId"], `${where}.spanId`, HEX16);
  }

  request(value: unknown): void {
    const body = this.object(value, "request");
    if (body === null) return;
    this.fields(body, "request", ["resourceLogs"]);
    this.array(body["resourceLogs"], "resourceLogs").forEach((rl, i) => {
      const where = `resourceLogs[${i}]`;
      const r = this.object(rl, where);
      if (r === null) return;
      this.fields(r, where, ["resource", "scopeLogs", "schemaUrl"]);
      this.string(r["schemaUrl"], `${where}.schemaUrl`);
      if (r["resource"] !== undefined) {
        const res = this.object(r["resource"], `${where}.resource`);
        if (res !== null) {
          this.fields(res, `${where}.resource`, ["attributes", "droppedAttributesCount"]);
          this.keyValues(res["attributes"], `${where}.resource.attributes`);
          this.uint32(res["droppedAttributesCount"], `${where}.resource.droppedAttributesCount`);
        }
      }
      this.array(r["scopeLogs"], `${where}.scopeLogs`).forEach((sl, j) => {
        const at = `${where}.scopeLogs[${j}]`;
        const s = this.object(sl, at);
        if (s === null) return;
        this.fields(s, at, ["scope", "logRecords", "schemaUrl"]);
        this.string(s["schemaUrl"], `${at}.schemaUrl`);
        if (s["scope"] !== undefined) {
          const scope = this.object(s["scope"], `${at}.scope`);
          if (scope !== null) {
            this.fields(scope, `${at}.scope`, [
              "name",
              "version",
              "attributes",
              "droppedAttributesCount",
            ]);
            this.string(scope["name"], `${at}.scope.name`);
            this.string(scope["version"], `${at}.scope.version`);
            this.keyValues(scope["attributes"], `${at}.scope.attributes`);
          }
        }
        this.array(s["logRecords"], `${at}.logRecords`).forEach((lr, k) =>
          this.logRecord(lr, `${at}.logRecords[${k}]`)
        );
      });
    });
  }
}

/**
 * Checks a parsed body against the OTLP JSON encoding of `ExportLogsServiceRequest`. Returns
 * what is wrong, at most 50 lines, each naming the field path; empty means valid.
 */
export function otlpLogsProblems(body: unknown): string[] {
  const checker = new Checker();
  checker.request(body);
  return checker.problems;
}

/** The log records of a valid request, flattened, with their resource's attributes. */
export function recordsOf(body: unknown): {
  resource: Record<string, unknown>;
  attributes: Record<string, unknown>;
  record: Json;
}[] {
  const out: ReturnType<typeof recordsOf> = [];
  const flat = (list: unknown): Record<string, unknown> =>
    Object.fromEntries(
      (Array.isArray(list) ? list : []).map((kv: { key: string; value: Json }) => {
        const [v] = Object.values(kv.value ?? {});
        return [kv.key, v];
      }),
    );
  for (const rl of (body as { resourceLogs?: Json[] }).resourceLogs ?? []) {
    const resource = flat((rl["resource"] as Json | undefined)?.["attributes"]);
    for (const sl of (rl["scopeLogs"] as Json[] | undefined) ?? []) {
      for (const record of (sl["logRecords"] as Json[] | undefined) ?? []) {
        out.push({ resource, attributes: flat(record["attributes"]), record });
      }
    }
  }
  return out;
}
