/**
 * The platform layer: every OS call Sentry makes (processes, /proc, sockets, signals, FFI).
 * Other folders import from here only.
 *
 * @module
 */

export {
  isCompiled,
  mainModulePath,
  selfCommand,
  type SelfCommandOptions,
} from "./self_command.ts";
