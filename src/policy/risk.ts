import type { Kind } from "../events/mod.ts";
import { GlobSet, type PathKey } from "./glob_set.ts";
import { type Cidr, cidrContains, escapeGlob, type Ip, parseCidr } from "./patterns.ts";

/**
 * The risk model, in points. Factors add up to the score, which is capped at 100. The README's
 * "Risk score" section documents this table; keep the two in step.
 */
export const POINTS = {
  kind: {
    "file.read": 5,
    "file.write": 10,
    "file.create": 10,
    "file.delete": 15,
    "file.rename": 10,
    "proc.exec": 10,
    "proc.exit": 0,
    "proc.control": 30,
    "net.connect": 10,
    "net.listen": 15,
    "db.connect": 20,
    "resource.cpu": 20,
    "resource.memory": 20,
  } satisfies Record<Kind, number>,
  /** Target sensitivity. */
  credential_path: 35,
  shell_startup: 30,
  phi_path: 30,
  system_path: 20,
  outside_workspace: 10,
  cloud_metadata: 30,
  private_network: 15,
  listen_all_interfaces: 10,
  privilege_escalation: 30,
  pipe_to_shell: 30,
  network_tool: 20,
  destructive_command: 20,
  /** Policy violation. */
  denied_by_list: 40,
  denied_by_default: 30,
  limit_exceeded: 30,
} as const;

/** Credential stores: SSH and GPG keys, cloud and registry credentials, browser profiles, keychains. */
const CREDENTIAL_GLOBS = [
  "~/.ssh/**",
  "~/.gnupg/**",
  "~/.aws/**",
  "~/.azure/**",
  "~/.config/gcloud/**",
  "~/.kube/config",
  "~/.docker/config.json",
  "~/.netrc",
  "~/.git-credentials",
  "~/.npmrc",
  "~/.pypirc",
  "~/.cargo/credentials*",
  "~/.config/gh/hosts.yml",
  "~/.password-store/**",
  "~/.local/share/keyrings/**",
  "~/Library/Keychains/**",
  "~/.mozilla/**",
  "~/.config/google-chrome/**",
  "~/.config/chromium/**",
  "~/.config/BraveSoftware/**",
  "~/.config/microsoft-edge/**",
  "~/Library/Application Support/Google/Chrome/**",
  "~/Library/Application Support/Firefox/**",
  "~/Library/Application Support/BraveSoftware/**",
  "~/Library/Application Support/Microsoft Edge/**",
  "~/Library/Cookies/**",
  "/etc/shadow",
  "/etc/gshadow",
  "/etc/sudoers",
  "/etc/sudoers.d/**",
  "/etc/ssh/ssh_host_*_key",
  "/root/.ssh/**",
  "**/.env",
  "**/.env.*",
  "**/*.pem",
  "**/*.key",
  "**/*.p12",
  "**/*.pfx",
  "**/id_rsa*",
  "**/id_ed25519*",
  "**/id_ecdsa*",
  "**/credentials.json",
  "**/service-account*.json",
];

/** Files a shell runs at start-up, and the places that make a program start on its own. */
const SHELL_STARTUP_GLOBS = [
  "~/.bashrc",
  "~/.bash_profile",
  "~/.bash_login",
  "~/.bash_logout",
  "~/.profile",
  "~/.zshrc",
  "~/.zprofile",
  "~/.zshenv",
  "~/.zlogin",
  "~/.config/fish/**",
  "/etc/profile",
  "/etc/profile.d/**",
  "/etc/bash.bashrc",
  "/etc/zsh/**",
  "/etc/environment",
  "~/.config/autostart/**",
  "~/.config/systemd/user/**",
  "~/Library/LaunchAgents/**",
  "/etc/cron*/**",
  "/var/spool/cron/**",
];

/** System directories: changes there outlive the agent and affect every user. */
const SYSTEM_GLOBS = [
  "/etc/**",
  "/usr/**",
  "/bin/**",
  "/sbin/**",
  "/lib/**",
  "/lib32/**",
  "/lib64/**",
  "/libx32/**",
  "/boot/**",
  "/opt/**",
  "/sys/**",
  "/var/lib/**",
  "/System/**",
  "/Library/**",
];

/** Path segments that suggest protected health information. */
const PHI_PATH =
  /(?:^|[/_.\- ])(?:patients?|phi|medical|ehr|emr|hl7|fhir|dicom|diagnos[a-z]*|clinical|health[_\- ]?records?|prescriptions?|lab[_\- ]?results?)(?:[/_.\- ]|$)|\.(?:hl7|dcm|ccda)$/i;

const METADATA_V4 = parseCidr("169.254.169.254/32") as Cidr;
const METADATA_V6 = parseCidr("fd00:ec2::254/128") as Cidr;
const PRIVATE = [
  "10.0.0.0/8",
  "172.16.0.0/12",
  "192.168.0.0/16",
  "169.254.0.0/16",
  "100.64.0.0/10",
  "fc00::/7",
  "fe80::/10",
]
  .map((c) => parseCidr(c) as Cidr);

const PRIVILEGE = /^(?:sudo|su|doas|pkexec|runuser|sudoedit)$/;
const NET_TOOLS = /^(?:nc|ncat|netcat|socat|telnet|nmap)$/;
const DESTRUCTIVE_BIN = /^(?:dd|shred|wipefs|mkfs(?:\.[a-z0-9]+)?|fdisk|parted)$/;
const PIPE_TO_SHELL = /\b(?:curl|wget)\b[^|]*\|\s*(?:sudo\s+)?(?:ba|z|da|k)?sh\b/;

/** The sensitivity classifiers, with the user's home expanded. Built once per compiled policy. */
export interface Sensitivity {
  credential: GlobSet;
  shellStartup: GlobSet;
  system: GlobSet;
}

/** Example and template env files hold no secrets by convention: not credential paths. */
const ENV_EXAMPLE = /\/\.env\.(?:example|sample|template|dist|defaults?)$/;

/**
 * Trust stores: the public CA certificates every TLS client reads (a `.pem` there is no
 * secret). Seen by the kernel tiers on every HTTPS request, so they must not score as
 * credentials.
 */
const PUBLIC_CERTS =
  /^(?:\/etc\/ssl\/certs\/|\/usr\/share\/ca-certificates\/|\/etc\/ca-certificates\/|\/etc\/pki\/(?:ca-trust|tls\/certs)\/|\/usr\/local\/share\/ca-certificates\/)|\/(?:cacert|ca-bundle|ca-certificates)[^/]*\.(?:pem|crt)$/;

/** Builds the sensitivity classifiers for a home directory. */
export function compileSensitivity(home: string): Sensitivity {
  const expand = (globs: string[]) =>
    globs.map((g) => (g.startsWith("~/") ? escapeGlob(home.replace(/\/$/, "")) + g.slice(1) : g));
  return {
    credential: new GlobSet(expand(CREDENTIAL_GLOBS)),
    shellStartup: new GlobSet(expand(SHELL_STARTUP_GLOBS)),
    system: new GlobSet(SYSTEM_GLOBS),
  };
}

/** A risk factor under construction: the evaluator turns these into `RiskFactor`s. */
export interface FactorDraft {
  id: string;
  points: number;
  reason: string;
}

/** Adds the sensitivity factors of a file path to `out`. */
export function pathFactors(
  key: PathKey,
  options: { kind: Kind; sensitivity: Sensitivity; insideWorkspace: boolean },
  out: FactorDraft[],
): void {
  const { sensitivity } = options;
  const { path } = key;
  const modifies = options.kind !== "file.read";
  if (
    sensitivity.credential.testKey(key) && !ENV_EXAMPLE.test(path) && !PUBLIC_CERTS.test(path)
  ) {
    out.push({
      id: "credential_path",
      points: POINTS.credential_path,
      reason: "the path holds credentials or secrets",
    });
  }
  if (modifies && sensitivity.shellStartup.testKey(key)) {
    out.push({
      id: "shell_startup",
      points: POINTS.shell_startup,
      reason: "a shell start-up or persistence file",
    });
  } else if (modifies && sensitivity.system.testKey(key)) {
    out.push({ id: "system_path", points: POINTS.system_path, reason: "a system directory" });
  }
  if (PHI_PATH.test(path)) {
    out.push({
      id: "phi_path",
      points: POINTS.phi_path,
      reason: "the path looks like health data (PHI)",
    });
  }
  if (modifies && !options.insideWorkspace) {
    out.push({
      id: "outside_workspace",
      points: POINTS.outside_workspace,
      reason: "a change outside the workspace",
    });
  }
}

/** Adds the sensitivity factors of a network peer to `out`. */
export function endpointFactors(
  ip: Ip | null,
  options: { listen: boolean },
  out: FactorDraft[],
): void {
  if (ip === null) return;
  if (options.listen) {
    if (ip.n === 0 || ip.n === 0n) {
      out.push({
        id: "listen_all_interfaces",
        points: POINTS.listen_all_interfaces,
        reason: "listens on every interface",
      });
    }
    return;
  }
  if (cidrContains(METADATA_V4, ip) || cidrContains(METADATA_V6, ip)) {
    out.push({
      id: "cloud_metadata",
      points: POINTS.cloud_metadata,
      reason: "the cloud metadata service, which hands out credentials",
    });
    return;
  }
  for (const cidr of PRIVATE) {
    if (cidrContains(cidr, ip)) {
      out.push({
        id: "private_network",
        points: POINTS.private_network,
        reason: "a private-network address",
      });
      return;
    }
  }
}

/** Adds the sensitivity factors of a command (known by one or more names) to `out`. */
export function commandFactors(names: readonly string[], args: string, out: FactorDraft[]): void {
  // The most telling of the program's names (see the evaluator's ProcessView.names).
  const name = names.find((n) => PRIVILEGE.test(n)) ?? names.find((n) => NET_TOOLS.test(n)) ??
    names.find((n) => DESTRUCTIVE_BIN.test(n) || n === "rm") ?? names[0] ?? "";
  if (PRIVILEGE.test(name)) {
    out.push({
      id: "privilege_escalation",
      points: POINTS.privilege_escalation,
      reason: `"${name}" runs commands as another user`,
    });
  } else if (NET_TOOLS.test(name)) {
    out.push({
      id: "network_tool",
      points: POINTS.network_tool,
      reason: `"${name}" opens raw network connections`,
    });
  } else if (DESTRUCTIVE_BIN.test(name) || (name === "rm" && isRecursiveForce(args))) {
    out.push({
      id: "destructive_command",
      points: POINTS.destructive_command,
      reason: "destroys data",
    });
  }
  if (PIPE_TO_SHELL.test(args)) {
    out.push({
      id: "pipe_to_shell",
      points: POINTS.pipe_to_shell,
      reason: "pipes a download into a shell",
    });
  }
}

/**
 * Tells whether rm's arguments ask for both recursion and force, in any spelling: `-rf`, `-Rf`,
 * `-fr`, `-r -f`, `--recursive --force`. Options end at `--`.
 */
function isRecursiveForce(args: string): boolean {
  let recursive = false;
  let force = false;
  for (const arg of args.split(" ")) {
    if (arg === "--") break;
    if (arg === "--recursive") recursive = true;
    else if (arg === "--force") force = true;
    else if (/^-[a-zA-Z]+$/.test(arg)) {
      if (arg.includes("r") || arg.includes("R")) recursive = true;
      if (arg.includes("f")) force = true;
    }
  }
  return recursive && force;
}
