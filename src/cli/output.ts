/**
 * The only place that prints. Commands write through these functions so that output can be
 * captured in tests and colour follows one rule: only on a terminal, never with NO_COLOR.
 * @module
 */

const encoder = new TextEncoder();

/** Where output goes; tests swap it for a buffer. */
export interface Sink {
  out: (text: string) => void;
  err: (text: string) => void;
  /** Whether stderr is a terminal that takes colour. */
  color: boolean;
}

function defaultSink(): Sink {
  let color = false;
  try {
    color = Deno.stderr.isTerminal() && Deno.env.get("NO_COLOR") === undefined;
  } catch {
    color = false;
  }
  return {
    out: (text) => writeAll(Deno.stdout, text),
    err: (text) => writeAll(Deno.stderr, text),
    color,
  };
}

function writeAll(file: { writeSync(p: Uint8Array): number }, text: string): void {
  let bytes = encoder.encode(text);
  while (bytes.length > 0) {
    const n = file.writeSync(bytes);
    bytes = bytes.subarray(n);
  }
}

let sink: Sink | null = null;

function current(): Sink {
  sink ??= defaultSink();
  return sink;
}

/** Replaces the output sink and returns the previous one (for tests). */
export function setSink(next: Sink | null): Sink | null {
  const prev = sink;
  sink = next;
  return prev;
}

/** Prints a line on stdout. */
export function println(line = ""): void {
  current().out(line + "\n");
}

/** Prints a value as one JSON line on stdout. */
export function printJson(value: unknown): void {
  current().out(JSON.stringify(value) + "\n");
}

/** Prints a line on stderr. */
export function eprintln(line = ""): void {
  current().err(line + "\n");
}

/** The ANSI colours Sentry uses. */
export type Color = "red" | "yellow" | "green" | "cyan" | "dim" | "bold" | "magenta";

const CODES: Record<Color, [number, number]> = {
  red: [31, 39],
  yellow: [33, 39],
  green: [32, 39],
  cyan: [36, 39],
  magenta: [35, 39],
  dim: [2, 22],
  bold: [1, 22],
};

/** Wraps text in a colour when stderr takes colour; otherwise returns it unchanged. */
export function paint(text: string, color: Color): string {
  if (!current().color) return text;
  const [open, close] = CODES[color];
  return `\x1b[${open}m${text}\x1b[${close}m`;
}

/** Formats rows as left-aligned columns separated by two spaces. */
export function formatTable(rows: readonly (readonly string[])[]): string[] {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => {
      widths[i] = Math.max(widths[i] ?? 0, visibleLength(cell));
    });
  }
  return rows.map((row) =>
    row.map((cell, i) =>
      i === row.length - 1 ? cell : cell + " ".repeat((widths[i] ?? 0) - visibleLength(cell))
    ).join("  ").trimEnd()
  );
}

function visibleLength(text: string): number {
  // deno-lint-ignore no-control-regex
  return text.replace(/\x1b\[[0-9;]*m/g, "").length;
}

/** Prints rows as an aligned table on stdout. */
export function printTable(rows: readonly (readonly string[])[]): void {
  for (const line of formatTable(rows)) println(line);
}

/** Writes text on stdout as it is, for help text from the argument parser. */
export function print(text: string): void {
  current().out(text);
}

/** Writes text on stderr as it is. */
export function eprint(text: string): void {
  current().err(text);
}

/** Prints a value as one JSON line on stderr (for alerts while the agent owns stdout). */
export function eprintJson(value: unknown): void {
  current().err(JSON.stringify(value) + "\n");
}
