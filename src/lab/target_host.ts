/**
 * The lab's target host: a target agent running as host B would run it.
 * In namespace mode B is its own network namespace AND its own mount
 * namespace, with private tmpfs on /dev/shm, /tmp and /run: it shares only
 * the read-only project tree and the guest image cache with the source
 * host, as a real second host has its own install. Its TLS material is
 * made on the source host and copied onto B before B's /tmp hides it,
 * the way an operator installs a certificate on a host. In loopback mode
 * (no root) the agent runs on this host.
 *
 * The lab itself, as the operator of both hosts, reaches B's files
 * through `/proc/PID/root` of B's processes; gangway never does.
 *
 * @module
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { AgentProcess, makeAgentCredentials } from "../target/agent_process.ts";
import type { LabSession } from "./session.ts";

/** The agent's port on the target host in namespace mode. */
const AGENT_PORT = 7100;
/** Where the agent keeps destinations' RAM and its own files on host B. */
const B_RAM_DIR = "/dev/shm/gangway";
const B_RUN_DIR = "/run/gangway-agent";

/**
 * Sets up host B's private mounts and runs the rest of the command line.
 * `$0` is a directory of small text files (the TLS material; "-" for
 * none), put back at the same path on B. `$1` and `$2` list directories
 * host B shares with A (colon-separated, may be empty), bound in at the
 * same paths, as NFS would be: `$1` writable (shared storage), `$2`
 * read-only (the project's own tree, wherever it lies). They are staged
 * before any private tmpfs hides them.
 */
const PRIVATE_HOST_SCRIPT = `set -e
carry="$0"
shared="$1"
readonly_shared="$2"
shift 2
saved=""
if [ "$carry" != - ]; then
  for f in "$carry"/*; do
    [ -f "$f" ] && saved="$saved$(basename "$f")=$(base64 -w0 < "$f") "
  done
fi
staging=$(mktemp -d /var/tmp/gangway-b-XXXXXX)
n=0
IFS=:
for dir in $shared $readonly_shared; do
  mkdir -p "$staging/$n" && mount --bind "$dir" "$staging/$n"
  n=$((n + 1))
done
unset IFS
mount -t tmpfs -o mode=0755 gangway-b-run /run
mount -t tmpfs -o mode=1777 gangway-b-tmp /tmp
mount -t tmpfs -o mode=1777 gangway-b-shm /dev/shm
n=0
IFS=:
for dir in $shared $readonly_shared; do
  mkdir -p "$dir" && mount --move "$staging/$n" "$dir" && rmdir "$staging/$n"
  n=$((n + 1))
done
for dir in $readonly_shared; do mount -o remount,bind,ro "$dir"; done
unset IFS
rmdir "$staging"
if [ "$carry" != - ]; then
  mkdir -p -m 0700 "$carry"
  for pair in $saved; do
    printf '%s' "\${pair#*=}" | base64 -d > "$carry/\${pair%%=*}"
    chmod 0600 "$carry/\${pair%%=*}"
  done
fi
exec "$@"`;

/** The project's own tree: host B runs the agent from it, as a host runs its install. */
const PROJECT_TREE = fileURLToPath(new URL("../../", import.meta.url)).replace(/\/$/, "");

/**
 * The command prefix that runs a program on host B: its network
 * namespace (null: this host's network, for tests that need only B's
 * files to be its own), a new private mount namespace with its own
 * /dev/shm, /tmp and /run, the files of the directory `carry` copied in,
 * the directories of `shared` (storage both hosts see) bound in, and the
 * project's tree bound in read-only.
 */
export function privateHostPrefix(
  namespace: string | null,
  carry?: string,
  shared: readonly string[] = [],
): string[] {
  return [
    ...namespace === null ? [] : ["ip", "netns", "exec", namespace],
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    PRIVATE_HOST_SCRIPT,
    carry ?? "-",
    shared.join(":"),
    PROJECT_TREE,
  ];
}

/** Options of {@linkcode startTargetAgent}. */
export interface TargetAgentOptions {
  /** Plain TCP instead of TLS. Default false. */
  insecure?: boolean;
  /**
   * No shared storage: B does not see A's overlays, and the sources copy
   * them (B finds the base images by hash in the image cache). Default false.
   */
  copyStorage?: boolean;
}

/**
 * Starts the target agent on the lab's target host; the session ends it
 * with the host's other processes.
 *
 * Requires `--allow-run`, `--allow-read`, `--allow-write` (and root in namespace mode).
 */
export async function startTargetAgent(
  session: LabSession,
  options: TargetAgentOptions = {},
): Promise<AgentProcess> {
  const host = session.network.target;
  const credentials = options.insecure
    ? undefined
    : await makeAgentCredentials(host.address, session.runDir);
  const onHostB = host.namespace !== null;
  const imagesDir = dirname(session.image.kernel);
  try {
    const agent = await AgentProcess.start({
      address: host.address,
      port: onHostB ? AGENT_PORT : 0,
      insecure: options.insecure,
      credentials,
      dir: onHostB ? B_RAM_DIR : session.hostRamDir("target"),
      // Short: the destinations' QMP sockets go under it, and a socket's path has 107 bytes at most.
      runDir: agentRunDir(session),
      imagesDir,
      // Shared storage: the guests' overlays, and the base images in the image cache.
      sharedDisks: options.copyStorage ? [] : [session.diskDir, imagesDir],
      commandPrefix: onHostB
        ? privateHostPrefix(
          host.namespace!,
          credentials?.dir,
          options.copyStorage ? [] : [session.diskDir],
        )
        : undefined,
      stderr: "null",
    });
    session.trackChild(agent.server.process);
    return agent;
  } catch (error) {
    if (credentials) await Deno.remove(credentials.dir, { recursive: true }).catch(() => {});
    throw error;
  }
}

/** The agent's run directory, as host B sees it. */
function agentRunDir(session: LabSession): string {
  return session.network.target.namespace !== null ? B_RUN_DIR : join(session.ramDir, "agent");
}

/**
 * Where the agent's destination of a guest will write its serial console,
 * as host B sees it, known before the destination starts so that its
 * first line is read as it arrives. It follows the agent's layout
 * (`RUN_DIR/guests/NAME/`, src/target/agent_host.ts and agent_gang.ts) and
 * QEMU's log name (src/qemu/guest_launch.ts); the agent reports the real
 * path afterwards (`KeptGuest.serialLog`), to check it against.
 *
 * @param session The lab session
 * @param name The guest's name
 * @returns The path of the destination's serial log on host B
 */
export function agentSerialLog(session: LabSession, name: string): string {
  return join(agentRunDir(session), "guests", name, `${name}.serial.log`);
}

/**
 * What the lab, operator of both hosts, puts before a path of host B to
 * reach it: the agent's `/proc/PID/root` in namespace mode, nothing in
 * loopback mode.
 *
 * @param session The lab session
 * @param agent The target agent, running
 * @returns The prefix
 */
export function agentRoot(session: LabSession, agent: AgentProcess): string {
  return session.network.target.namespace !== null ? `/proc/${agent.server.process.pid}/root` : "";
}
