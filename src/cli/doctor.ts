/**
 * `sentry doctor`: the quick start's "check that everything is working". Each check gets a
 * status and, when something is wrong, the fix:
 *
 * - `ok`: works; `skip`: not checked, with the reason (no key, no journal yet, not Linux);
 * - `warn`: works in part, or something that Sentry does not need yet is missing;
 * - `fail`: Sentry cannot do its job (the data directory is not writable, `/proc` is unreadable,
 *   the journal is damaged, the config file does not load, the configured key is refused, the
 *   clock is more than 5 minutes off).
 *
 * The key and endpoint are resolved as the uploader resolves them (`resolveSyncSettings`, with
 * the config file's `sync` section), so the doctor checks what sync will use.
 *
 * The command exits 1 when any check fails, else 0. Every check is bounded in time: the endpoint
 * gets {@link DOCTOR_ENDPOINT_TIMEOUT_MS}, strace 2 s, and the rest are local reads. Nothing is
 * left behind: a missing directory or journal is not created.
 *
 * @module
 */

import type { Command } from "commander";
import { join } from "node:path";
import { configPath, loadConfig, type LoadedConfig } from "../config/mod.ts";
import { JOURNAL_FILE, JournalVersionError, openJournal, SCHEMA_VERSION } from "../journal/mod.ts";
import {
  configDir,
  dataDir,
  describePtraceScope,
  type DirectoryProbe,
  type Env,
  hidesOtherUsers,
  isCompiled,
  mainModulePath,
  probeDirectory,
  probeFanotify,
  probeInotify,
  probeLandlock,
  probeProc,
  probeStrace,
  readInotifyLimits,
  readPtraceScope,
} from "../platform/mod.ts";
import {
  apiKeyProblem,
  type Credentials,
  DEFAULT_ENDPOINT,
  ENDPOINT_VARIABLE,
  hello,
  type HelloResult,
  resolveSyncSettings,
  SyncRequestError,
  type SyncSettings,
} from "../sync/mod.ts";
import { probeTiers, type TierProbe } from "../session/mod.ts";
import {
  BLOCK_COLUMNS,
  blockingMatrix,
  type BlockingRow,
  type HostAbilities,
} from "../session/blocking.ts";
import { VERSION } from "../version.ts";
import { describeSkew, maskKey } from "./account.ts";
import { ExitCode } from "./errors.ts";
import { type Color, formatTable, paint, printJson, println } from "./output.ts";

/** A check's outcome. */
export type CheckStatus = "ok" | "warn" | "fail" | "skip";

/** One line of the doctor's table. */
export interface DoctorCheck {
  /** A stable id, such as `data_dir`, for scripts. */
  id: string;
  /** What is checked, for people. */
  title: string;
  status: CheckStatus;
  /** What was found. */
  detail: string;
  /** What to do about it, or null when there is nothing to do. */
  fix: string | null;
}

/** The doctor's verdict: `ok` is false when any check failed. */
export interface DoctorReport {
  ok: boolean;
  checks: DoctorCheck[];
  /** What can be blocked before it happens here, by command and privilege (Linux only). */
  blocking: BlockingRow[];
}

/** What the host offers for blocking, from the tier probes and the kernel. */
function hostAbilities(probes: TierProbe[]): HostAbilities {
  const ok = (tier: string) => probes.some((p) => p.tier === tier && p.ok);
  let cgroupV2 = false;
  for (
    const path of ["/sys/fs/cgroup/unified/cgroup.controllers", "/sys/fs/cgroup/cgroup.controllers"]
  ) {
    try {
      Deno.statSync(path);
      cgroupV2 = true;
    } catch {
      // Not mounted there.
    }
  }
  return {
    root: Deno.uid() === 0,
    seccomp: ok("seccomp"),
    landlockAbi: probeLandlock().abi ?? 0,
    fanotifyPermission: Deno.uid() === 0 && probeFanotify().permission,
    ebpf: ok("ebpf"),
    cgroupV2,
  };
}

/** How long the endpoint may take to answer `hello`. */
export const DOCTOR_ENDPOINT_TIMEOUT_MS = 3000;

/** Clock skew above this is a warning... */
export const SKEW_WARN_MS = 2000;
/** ...and above this a failure: the collector's times would be off by more than 5 minutes. */
export const SKEW_FAIL_MS = 5 * 60_000;

/** Below these inotify limits, a large workspace is watched only in part. */
export const MIN_INOTIFY_WATCHES = 65_536;
/** Each `sentry run` takes one inotify instance; other tools (editors) take theirs. */
export const MIN_INOTIFY_INSTANCES = 128;

/** What {@link runDoctor} checks. */
export interface DoctorOptions {
  /** The environment, as `Deno.env.toObject()` gives it. */
  env: Env;
  /** How long the endpoint may take; default {@link DOCTOR_ENDPOINT_TIMEOUT_MS}. */
  endpointTimeoutMs?: number;
}

function check(
  id: string,
  title: string,
  status: CheckStatus,
  detail: string,
  fix: string | null = null,
): DoctorCheck {
  return { id, title, status, detail, fix };
}

function reason(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function octal(mode: number): string {
  return `0${(mode & 0o777).toString(8).padStart(3, "0")}`;
}

// --- Sentry itself -----------------------------------------------------------------------------

function versionCheck(): DoctorCheck {
  const platform = `${Deno.build.os} ${Deno.build.arch}, deno ${Deno.version.deno}`;
  if (isCompiled()) {
    return check("version", "Sentry", "ok", `${VERSION}, compiled (${platform})`);
  }
  let from = "from source";
  try {
    from = `from source (${mainModulePath()})`;
  } catch {
    // `deno eval` or a remote entry point: the path says nothing useful.
  }
  return check("version", "Sentry", "ok", `${VERSION}, ${from}, ${platform}`);
}

// --- Directories -------------------------------------------------------------------------------

function directoryCheck(
  id: string,
  title: string,
  probe: DirectoryProbe,
  holds: string,
): DoctorCheck {
  const { path } = probe;
  if (!probe.writable) {
    const what = probe.exists ? "is not writable" : "cannot be created";
    return check(
      id,
      title,
      "fail",
      `"${path}" ${what}: ${probe.error ?? "unknown reason"}`,
      `set SENTRY_HOME to a directory this user can write, or make "${path}" writable`,
    );
  }
  if (!probe.exists) {
    return check(
      id,
      title,
      "ok",
      `"${path}" does not exist yet; it will be created (mode 0700) in "${probe.ancestor}", which is writable`,
    );
  }
  const mode = probe.mode ?? 0;
  if ((mode & 0o077) !== 0) {
    return check(
      id,
      title,
      "warn",
      `"${path}" is writable but mode ${
        octal(mode)
      }: other users can list it, and it holds ${holds}`,
      `chmod 700 "${path}"`,
    );
  }
  return check(id, title, "ok", `"${path}" is writable, mode ${octal(mode)}`);
}

// --- The key, the endpoint and the clock -------------------------------------------------------

type CredentialsResult =
  | { kind: "none"; endpoint: string }
  | { kind: "disabled"; configPath: string }
  | { kind: "error"; message: string }
  | { kind: "found"; credentials: Credentials; endpointSource: SyncSettings["endpointSource"] };

/** Resolves the key and endpoint as the uploader does (see `resolveSyncSettings`). */
function findCredentials(env: Env, dir: string, config: ConfigResult): CredentialsResult {
  const section = config.loaded?.config.sync;
  try {
    const settings = resolveSyncSettings({
      env,
      configDir: dir,
      ...(section === undefined ? {} : { section }),
    });
    if (!settings.enabled) return { kind: "disabled", configPath: config.path };
    if (settings.credentials !== null) {
      return {
        kind: "found",
        credentials: settings.credentials,
        endpointSource: settings.endpointSource,
      };
    }
    return { kind: "none", endpoint: settings.endpoint };
  } catch (error) {
    // A configuration directory under a file has no credentials; its own check says why.
    if (error instanceof Error && error.cause instanceof Deno.errors.NotADirectory) {
      return { kind: "none", endpoint: DEFAULT_ENDPOINT };
    }
    return { kind: "error", message: reason(error) };
  }
}

/** The config file, loaded or not. */
interface ConfigResult {
  path: string;
  loaded: LoadedConfig | null;
  error: string | null;
}

async function loadConfigFile(env: Env): Promise<ConfigResult> {
  let path = "config.yaml";
  try {
    path = configPath(env);
    const loaded = await loadConfig({ env });
    return { path: loaded.path, loaded, error: null };
  } catch (error) {
    return { path, loaded: null, error: reason(error) };
  }
}

function configCheck(config: ConfigResult): DoctorCheck {
  if (config.error !== null) {
    return check(
      "config",
      "config file",
      "fail",
      config.error,
      "fix the file, then check it with: sentry config validate",
    );
  }
  if (config.loaded?.exists !== true) {
    return check("config", "config file", "ok", `none at "${config.path}": the defaults apply`);
  }
  return check("config", "config file", "ok", `"${config.path}" is valid`);
}

type HelloOutcome = { ok: true; result: HelloResult } | { ok: false; error: SyncRequestError };

function keySource(credentials: Credentials): string {
  return credentials.source === "env"
    ? `$${credentials.variable}`
    : `"${credentials.path ?? "credentials.json"}"`;
}

function credentialsFileWarning(credentials: Credentials): string | null {
  if (credentials.source !== "file" || credentials.path === undefined) return null;
  try {
    const mode = Deno.statSync(credentials.path).mode ?? 0;
    return (mode & 0o077) !== 0 ? octal(mode) : null;
  } catch {
    return null;
  }
}

const ENDPOINT_SOURCES: Record<SyncSettings["endpointSource"], string> = {
  env: `$${ENDPOINT_VARIABLE}`,
  config: "the config file",
  credentials: "sentry login",
  default: "the default",
};

const LOGIN_FIX = "sentry login --api-key KEY [--endpoint URL]";

function syncChecks(found: CredentialsResult, outcome: HelloOutcome | null): DoctorCheck[] {
  if (found.kind === "error") {
    return [
      check("api_key", "API key", "fail", found.message, LOGIN_FIX),
      check("endpoint", "endpoint", "skip", "no usable credentials"),
      check("clock", "clock skew", "skip", "no usable credentials"),
    ];
  }
  if (found.kind === "disabled") {
    const off = `sync is off: sync.enabled is false in "${found.configPath}"`;
    return [
      check("api_key", "API key", "skip", off),
      check("endpoint", "endpoint", "skip", off),
      check("clock", "clock skew", "skip", off),
    ];
  }
  if (found.kind === "none") {
    const off = "no API key: sync is off";
    return [
      check("api_key", "API key", "warn", `${off}; events stay on this host`, LOGIN_FIX),
      check("endpoint", "endpoint", "skip", `${off} (${found.endpoint} not contacted)`),
      check("clock", "clock skew", "skip", off),
    ];
  }
  const { credentials } = found;
  const source = `${maskKey(credentials.apiKey)} from ${keySource(credentials)}`;
  const shape = apiKeyProblem(credentials.apiKey);
  // A malformed key is not sent, so there is no outcome.
  if (shape !== null || outcome === null) {
    return [
      check(
        "api_key",
        "API key",
        "fail",
        `${source} is malformed: ${shape ?? "unknown"}`,
        LOGIN_FIX,
      ),
      check("endpoint", "endpoint", "skip", "the key is malformed"),
      check("clock", "clock skew", "skip", "the key is malformed"),
    ];
  }
  const { endpoint } = credentials;
  const wideMode = credentialsFileWarning(credentials);
  if (outcome.ok) {
    const { result } = outcome;
    const key = result.body.key;
    const keyCheck = wideMode === null
      ? check(
        "api_key",
        "API key",
        "ok",
        `${source}, accepted as "${key.name}" (${key.id})`,
      )
      : check(
        "api_key",
        "API key",
        "warn",
        `${source}, accepted as "${key.name}", but the file is mode ${wideMode}`,
        `chmod 600 ${keySource(credentials)}`,
      );
    const latency = Math.round(result.latencyMs);
    const skew = Math.abs(result.skewMs);
    const clockStatus: CheckStatus = skew > SKEW_FAIL_MS
      ? "fail"
      : skew > SKEW_WARN_MS
      ? "warn"
      : "ok";
    return [
      keyCheck,
      check(
        "endpoint",
        "endpoint",
        "ok",
        `${endpoint} (from ${
          ENDPOINT_SOURCES[found.endpointSource]
        }) answers in ${latency} ms (${result.body.server} ${result.body.version}, protocol ${result.body.protocol})`,
      ),
      check(
        "clock",
        "clock skew",
        clockStatus,
        `${describeSkew(result.skewMs)} (±${Math.ceil(latency / 2)} ms)`,
        clockStatus === "ok"
          ? null
          : "synchronise this host's clock with NTP (timedatectl set-ntp true, or chrony)",
      ),
    ];
  }
  const { error } = outcome;
  if (error.kind === "auth") {
    return [
      check(
        "api_key",
        "API key",
        "fail",
        `${source} is refused by ${endpoint}: ${error.message.replace(/^.*?: /, "")}`,
        `make a key on the collector (sentry server keys add NAME), then ${LOGIN_FIX}`,
      ),
      check("endpoint", "endpoint", "ok", `${endpoint} answers (it refused the key)`),
      check("clock", "clock skew", "skip", "the endpoint refused the key"),
    ];
  }
  const reachFix = error.kind === "network"
    ? `check that the collector runs and that ${endpoint} is right; change it with ${LOGIN_FIX}` +
      ` or $${ENDPOINT_VARIABLE}`
    : `check that ${endpoint} is a Sentry collector; change it with ${LOGIN_FIX}`;
  return [
    check("api_key", "API key", "skip", `${source}; not checked: the endpoint did not answer`),
    check(
      "endpoint",
      "endpoint",
      "warn",
      `${error.message}; events wait in the outbox until it answers`,
      reachFix,
    ),
    check("clock", "clock skew", "skip", "the endpoint did not answer"),
  ];
}

// --- The platform's sensors --------------------------------------------------------------------

function procCheck(): DoctorCheck {
  const proc = probeProc();
  const self = proc.paths[0];
  if (!proc.usable) {
    return check(
      "proc",
      "/proc",
      "fail",
      `cannot read ${self?.path ?? "/proc/self/stat"}: ${
        self?.error ?? "unknown"
      }; no sensor can work`,
      "mount procfs: mount -t proc proc /proc (in a container, do not mask /proc)",
    );
  }
  const notes: string[] = [];
  const mount = proc.mount;
  if (mount !== null && hidesOtherUsers(mount.hidepid)) {
    notes.push(
      `hidepid=${mount.hidepid}: only this user's processes are visible${
        Deno.uid() === 0 ? "" : " (enough for agents this user runs)"
      }`,
    );
  }
  const missing = proc.paths.filter((p) => !p.readable);
  if (missing.length > 0) {
    const list = missing.map((p) => `${p.path} (${p.use})`).join(", ");
    return check(
      "proc",
      "/proc",
      "warn",
      [`cannot read ${list}`, ...notes].join("; "),
      mount?.subset === "pid"
        ? "mount /proc without subset=pid"
        : "make these /proc files readable to this user",
    );
  }
  return check("proc", "/proc", "ok", ["readable", ...notes].join("; "));
}

function inotifyCheck(): DoctorCheck {
  const failure = probeInotify("/");
  const limits = readInotifyLimits();
  const watches = limits.maxUserWatches;
  const instances = limits.maxUserInstances;
  const shown = `max_user_watches ${watches ?? "unknown"}, max_user_instances ${
    instances ?? "unknown"
  }`;
  if (failure !== null) {
    return check(
      "inotify",
      "inotify",
      "warn",
      `cannot start a file watch: ${failure} (${shown}); file changes are seen only through open files`,
      "raise fs.inotify.max_user_instances (sudo sysctl -w fs.inotify.max_user_instances=512) " +
        "or close other watchers",
    );
  }
  const low: string[] = [];
  const fixes: string[] = [];
  if (watches !== null && watches < MIN_INOTIFY_WATCHES) {
    low.push(
      `max_user_watches is ${watches}: a workspace with more directories is watched in part`,
    );
    fixes.push("fs.inotify.max_user_watches=524288");
  }
  if (instances !== null && instances < MIN_INOTIFY_INSTANCES) {
    low.push(`max_user_instances is ${instances}: few concurrent sessions can watch files`);
    fixes.push("fs.inotify.max_user_instances=512");
  }
  if (low.length > 0) {
    return check(
      "inotify",
      "inotify",
      "warn",
      low.join("; "),
      `sudo sysctl -w ${fixes.join(" ")} (and put it in /etc/sysctl.d/ to keep it)`,
    );
  }
  return check("inotify", "inotify", "ok", `works; ${shown}`);
}

function ptraceCheck(): DoctorCheck {
  const scope = readPtraceScope();
  if (scope === null) {
    return check("ptrace", "ptrace scope", "ok", "no Yama: classic ptrace permissions");
  }
  const detail = `kernel.yama.ptrace_scope ${scope}, ${describePtraceScope(scope)}`;
  if (scope <= 1) return check("ptrace", "ptrace scope", "ok", detail);
  return check(
    "ptrace",
    "ptrace scope",
    "warn",
    `${detail}; a ptrace sensor could not trace agents`,
    scope === 3
      ? "scope 3 lasts until reboot; boot with kernel.yama.ptrace_scope=1 in /etc/sysctl.d/"
      : "sudo sysctl -w kernel.yama.ptrace_scope=1",
  );
}

function fanotifyCheck(): DoctorCheck {
  const probe = probeFanotify();
  if (probe.permission) {
    return check(
      "fanotify",
      "fanotify",
      "ok",
      "permission events available (CAP_SYS_ADMIN)",
    );
  }
  if (probe.notification) {
    return check(
      "fanotify",
      "fanotify",
      "ok",
      `notification events only; permission events (blocking opens) need CAP_SYS_ADMIN (${probe.permissionError})`,
    );
  }
  return check(
    "fanotify",
    "fanotify",
    "warn",
    `not available: ${probe.notificationError ?? probe.permissionError ?? "unknown"}`,
    probe.notificationError === "ENOSYS"
      ? "use a kernel built with CONFIG_FANOTIFY"
      : "allow fanotify_init (a container's seccomp profile may forbid it), or run Sentry with CAP_SYS_ADMIN",
  );
}

function landlockCheck(): DoctorCheck {
  const probe = probeLandlock();
  if (probe.abi !== null) {
    return check("landlock", "Landlock", "ok", `ABI version ${probe.abi}`);
  }
  const why = probe.error === "ENOSYS"
    ? "the kernel has no Landlock (ENOSYS)"
    : probe.error === "EOPNOTSUPP"
    ? "Landlock is built in but disabled at boot (EOPNOTSUPP)"
    : `cannot ask the kernel: ${probe.error}`;
  return check(
    "landlock",
    "Landlock",
    "warn",
    `not available: ${why}`,
    probe.error === "EOPNOTSUPP"
      ? 'add "landlock" to the kernel\'s lsm= boot parameter'
      : "use Linux 5.13 or later with CONFIG_SECURITY_LANDLOCK",
  );
}

async function straceCheck(): Promise<DoctorCheck> {
  const probe = await probeStrace();
  if (probe.version !== null) return check("strace", "strace", "ok", `version ${probe.version}`);
  return check(
    "strace",
    "strace",
    "warn",
    `not usable: ${probe.error ?? "unknown"}`,
    "install strace (apt install strace, dnf install strace, apk add strace)",
  );
}

/**
 * One line per sensing tier (can it run here, and what it sees), then which tier `auto` picks
 * for `run` and for `attach`. Only poll left is a warning: Sentry then misses short actions.
 */
function tierChecks(probes: TierProbe[] | null): DoctorCheck[] {
  if (probes === null) {
    return [check("sensor", "sensing tier", "warn", `poll only: not Linux (${Deno.build.os})`)];
  }
  const checks = probes.map((p) =>
    check(
      `tier_${p.tier}`,
      `tier ${p.tier} (${p.serves.join(", ")})`,
      p.ok ? "ok" : "skip",
      p.ok ? p.detail : `not available: ${p.detail}`,
    )
  );
  const pick = (kind: "run" | "attach") =>
    probes.find((p) => p.ok && p.serves.includes(kind))?.tier ?? "poll";
  const run = pick("run");
  const attach = pick("attach");
  checks.push(check(
    "sensor",
    "sensing tier (auto)",
    run === "poll" || attach === "poll" ? "warn" : "ok",
    `run: ${run}, attach: ${attach}`,
    run === "poll" || attach === "poll"
      ? "run Sentry as root for the ebpf tier (or CAP_BPF and CAP_PERFMON); the poll tier misses actions shorter than its interval"
      : null,
  ));
  return checks;
}

function platformChecks(): DoctorCheck[] {
  if (Deno.build.os !== "linux") {
    const why = `not Linux (${Deno.build.os})`;
    return [
      check("proc", "/proc", "skip", why),
      check("inotify", "inotify", "skip", why),
      check("ptrace", "ptrace scope", "skip", why),
      check("fanotify", "fanotify", "skip", why),
      check("landlock", "Landlock", "skip", why),
    ];
  }
  return [procCheck(), inotifyCheck(), ptraceCheck(), fanotifyCheck(), landlockCheck()];
}

// --- The journal -------------------------------------------------------------------------------

function journalCheck(dir: string): DoctorCheck {
  const path = join(dir, JOURNAL_FILE);
  let mode: number;
  try {
    const info = Deno.statSync(path);
    mode = info.mode ?? 0;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory) {
      return check(
        "journal",
        "journal",
        "skip",
        `no journal at "${path}" yet; the first sentry run creates it`,
      );
    }
    return check("journal", "journal", "fail", `cannot read "${path}": ${reason(error)}`);
  }
  const aside =
    `move it aside (mv "${path}" "${path}.broken"); the next sentry run starts a new one`;
  let result: { problems: string[]; schemaVersion: number };
  const started = performance.now();
  try {
    const journal = openJournal(path, { busyTimeoutMs: 2000 });
    try {
      result = journal.integrityCheck();
    } finally {
      journal.close();
    }
  } catch (error) {
    if (error instanceof JournalVersionError) {
      return check("journal", "journal", "fail", error.message, "upgrade Sentry");
    }
    const why = reason(error).replace(/^Cannot open journal "[^"]*": /, "");
    if (/not a database|malformed|corrupt/i.test(why)) {
      return check("journal", "journal", "fail", `"${path}" is damaged: ${why}`, aside);
    }
    if (/locked|busy/i.test(why)) {
      return check(
        "journal",
        "journal",
        "warn",
        `"${path}" is busy: ${why}`,
        "run sentry doctor again when the Sentry writing it is idle",
      );
    }
    return check(
      "journal",
      "journal",
      "fail",
      `cannot open "${path}": ${why}`,
      "make the journal and its directory readable and writable by this user (owner, mode, mount)",
    );
  }
  const ms = Math.round(performance.now() - started);
  if (result.problems.length > 0) {
    return check(
      "journal",
      "journal",
      "fail",
      `"${path}" fails its integrity check: ${
        result.problems.slice(0, 3).map((p) =>
          p.replace(/^\*\*\* in database \w+ \*\*\*\s*/, "").replace(/\s+/g, " ")
        ).join("; ")
      }`,
      aside,
    );
  }
  const detail =
    `"${path}" is sound (schema version ${result.schemaVersion} of ${SCHEMA_VERSION}, checked in ${ms} ms)`;
  if ((mode & 0o077) !== 0) {
    // Opening a journal narrows its mode to 0600; say so, or say that it could not.
    let now = mode;
    try {
      now = Deno.statSync(path).mode ?? mode;
    } catch {
      // Gone meanwhile: keep what was seen.
    }
    if ((now & 0o077) === 0) {
      return check(
        "journal",
        "journal",
        "ok",
        `${detail}; its mode was ${octal(mode)}; narrowed to ${octal(now)}`,
      );
    }
    return check(
      "journal",
      "journal",
      "warn",
      `${detail}, but mode ${octal(now)}: other users can read it`,
      `chmod 600 "${path}"`,
    );
  }
  return check("journal", "journal", "ok", detail);
}

// --- All together ------------------------------------------------------------------------------

/** Runs every check and returns them in a fixed order. It never throws for what it finds. */
export async function runDoctor(options: DoctorOptions): Promise<DoctorReport> {
  const { env } = options;
  let data: string | null = null;
  let config: string | null = null;
  const early: DoctorCheck[] = [versionCheck()];
  try {
    data = dataDir(env);
    config = configDir(env);
  } catch (error) {
    early.push(
      check("data_dir", "data directory", "fail", reason(error), "set SENTRY_HOME or HOME"),
    );
  }
  // The network and strace are the slow parts: start them first, check the rest meanwhile.
  const configFile = await loadConfigFile(env);
  const found: CredentialsResult = config === null
    ? { kind: "error", message: "no configuration directory" }
    : findCredentials(env, config, configFile);
  const helloPromise: Promise<HelloOutcome | null> =
    found.kind === "found" && apiKeyProblem(found.credentials.apiKey) === null
      ? hello(found.credentials.endpoint, {
        apiKey: found.credentials.apiKey,
        timeoutMs: options.endpointTimeoutMs ?? DOCTOR_ENDPOINT_TIMEOUT_MS,
      }).then(
        (result): HelloOutcome => ({ ok: true, result }),
        (error): HelloOutcome => {
          if (error instanceof SyncRequestError) return { ok: false, error };
          return {
            ok: false,
            error: new SyncRequestError(reason(error), { kind: "network", cause: error }),
          };
        },
      )
      : Promise.resolve(null);
  const stracePromise = Deno.build.os === "linux" ? straceCheck() : null;

  const checks = [...early];
  if (data !== null && config !== null) {
    if (config !== data) {
      checks.push(
        directoryCheck("config_dir", "config directory", probeDirectory(config), "the API key"),
      );
    }
    checks.push(
      directoryCheck(
        "data_dir",
        config === data ? "data and config directory" : "data directory",
        probeDirectory(data),
        "the journal of what agents did",
      ),
    );
  }
  checks.push(configCheck(configFile));
  const platform = platformChecks();
  const journal = data === null ? null : journalCheck(data);
  checks.push(...syncChecks(found, await helloPromise));
  checks.push(...platform);
  const probes = Deno.build.os === "linux" ? await probeTiers() : null;
  checks.push(...tierChecks(probes));
  checks.push(
    stracePromise === null
      ? check("strace", "strace", "skip", `not Linux (${Deno.build.os})`)
      : await stracePromise,
  );
  if (journal !== null) checks.push(journal);
  return {
    ok: checks.every((c) => c.status !== "fail"),
    checks,
    blocking: probes === null ? [] : blockingMatrix(hostAbilities(probes)),
  };
}

const STATUS_COLORS: Record<CheckStatus, Color> = {
  ok: "green",
  warn: "yellow",
  fail: "red",
  skip: "dim",
};

/** Prints the report as a table, each fix under its row, then a one-line summary. */
function printReport(report: DoctorReport): void {
  const rows = [
    ["STATUS", "CHECK", "DETAIL"],
    ...report.checks.map((c) => [paint(c.status, STATUS_COLORS[c.status]), c.title, c.detail]),
  ];
  const lines = formatTable(rows);
  const indent = " ".repeat(Math.max(...report.checks.map((c) => c.status.length), 6) + 2);
  lines.forEach((line, i) => {
    println(line);
    const fix = report.checks[i - 1]?.fix;
    if (i > 0 && fix !== null && fix !== undefined) {
      println(`${indent}${paint("fix:", "bold")} ${fix}`);
    }
  });
  if (report.blocking.length > 0) {
    println();
    println(
      paint(
        "What Sentry can block before it happens here (else the policy's next response):",
        "bold",
      ),
    );
    const table = formatTable([
      ["COMMAND", ...BLOCK_COLUMNS.map((c) => c.toUpperCase())],
      ...report.blocking.map((r) => [
        `${r.command} (${r.root ? "root" : "not root"})${r.unprobed ? " *" : ""}`,
        ...r.cells,
      ]),
    ]);
    for (const line of table) println(line);
    if (report.blocking.some((r) => r.unprobed)) {
      println("* not probed: doctor does not run as root; run it as root to check these rows");
    }
  }
  const count = (status: CheckStatus) => report.checks.filter((c) => c.status === status).length;
  println();
  println(
    `${count("ok")} ok, ${count("warn")} warning(s), ${count("fail")} failure(s), ${
      count("skip")
    } skipped`,
  );
}

/** Adds `sentry doctor`. */
export function registerDoctorCommand(program: Command): void {
  program.command("doctor")
    .description(
      "check that everything works: directories, API key, endpoint, clock, sensors, journal",
    )
    .option(
      "--json",
      'print { "ok", "checks": [{ id, title, status, detail, fix }], "blocking": [{ command, root, cells, unprobed }] }',
    )
    .action(async (opts: { json?: boolean }) => {
      const report = await runDoctor({ env: Deno.env.toObject() });
      if (opts.json) printJson(report);
      else printReport(report);
      const failed = report.checks.filter((c) => c.status === "fail");
      if (failed.length > 0) {
        throw new ExitCode(
          1,
          `doctor: ${failed.length} check(s) failed: ${failed.map((c) => c.title).join(", ")}`,
        );
      }
    });
}
