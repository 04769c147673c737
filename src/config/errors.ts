/** Where in the configuration file a problem is, as far as it is known. */
export interface ConfigErrorOptions {
  /** The configuration file. */
  file?: string;
  line?: number;
  column?: number;
  /** The dotted path of the offending field, such as `outputs.webhook[1].url`. */
  field?: string;
  cause?: unknown;
}

/**
 * A configuration file that cannot be loaded: bad YAML, an unknown key, a bad value or URL, an
 * unset environment variable. The CLI prints its message on one line and exits 2.
 */
export class ConfigError extends Error {
  /** The configuration file. */
  readonly file: string | undefined;
  readonly line: number | undefined;
  readonly column: number | undefined;
  /** The dotted path of the offending field. */
  readonly field: string | undefined;

  /** Builds the error; the message should already name the file, place and value. */
  constructor(message: string, options: ConfigErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "ConfigError";
    this.file = options.file;
    this.line = options.line;
    this.column = options.column;
    this.field = options.field;
  }
}
