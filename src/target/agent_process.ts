/**
 * The `agent` command as a child process: a target agent started from
 * this machine, possibly behind a command prefix that puts it on another
 * (simulated) host. With TLS it gets a throwaway CA, certificate and
 * token made for it.
 *
 * @module
 */
import type { TargetAddress } from "../transport/connect_target.ts";
import { readPemFile, readTokenFile } from "../transport/credentials.ts";
import { makeCerts } from "../transport/make_certs.ts";
import { RemoteTarget } from "./remote_target.ts";
import { ServerProcess } from "./server_process.ts";
import { delay } from "../_delay.ts";

/** The TLS material of one agent, made for it. */
export interface AgentCredentials {
  /** The private directory of the files (the agent reads them there). */
  dir: string;
  /** The CA certificate sources check the agent against (PEM text). */
  ca: string;
  /** The token sources present. */
  token: string;
  /** The file of the CA certificate, for a source's flags. */
  caFile: string;
  /** The file of the token, for a source's flags. */
  tokenFile: string;
  /** The agent's flags naming the files. */
  args: string[];
}

/**
 * Makes a throwaway CA, an agent certificate for `address` and a token, in
 * a new private directory (under `parent`, else the temporary directory).
 *
 * Requires `--allow-run=openssl`, `--allow-read`, `--allow-write`.
 */
export async function makeAgentCredentials(
  address: string,
  parent?: string,
): Promise<AgentCredentials> {
  const dir = await Deno.makeTempDir({ prefix: "gangway-tls-", dir: parent });
  try {
    const made = await makeCerts(dir, { ips: [address], days: 1 });
    return {
      dir,
      ca: await readPemFile(made.ca, "CA certificate"),
      token: await readTokenFile(made.token),
      caFile: made.ca,
      tokenFile: made.token,
      args: ["--cert", made.cert, "--key", made.key, "--token-file", made.token],
    };
  } catch (error) {
    await Deno.remove(dir, { recursive: true });
    throw error;
  }
}

/** Options of {@linkcode AgentProcess.start}. */
export interface AgentProcessOptions {
  /** Directory of the destinations' RAM files, as the agent sees it. Default: a new one under /dev/shm. */
  dir?: string;
  /** The agent's own directory, as it sees it. Default: a new one under /tmp. */
  runDir?: string;
  /** The address it listens on and sources reach it at. Default 127.0.0.1. */
  address?: string;
  /** Its port. Default: any free one. */
  port?: number;
  /** Runs it, e.g. `["ip", "netns", "exec", "NS"]`; it must exec its command. */
  commandPrefix?: readonly string[];
  /** Plain TCP and no token. Default false: TLS with credentials made for it. */
  insecure?: boolean;
  /** TLS material made by the caller (e.g. to carry it onto a simulated host first). */
  credentials?: AgentCredentials;
  /** Its `--images` directory. */
  imagesDir?: string;
  /** Its `--shared-disks` directories (storage the sources share with it). */
  sharedDisks?: readonly string[];
  /** More flags (limits). */
  args?: string[];
  /** Where its log lines go. Default: discarded. */
  stderr?: "inherit" | "null";
}

/**
 * A target agent running as a child process.
 *
 * Requires `--allow-run` (deno, openssl, the prefix), `--allow-read`, `--allow-write`, `--allow-net`.
 */
export class AgentProcess implements AsyncDisposable {
  /** The process. */
  readonly server: ServerProcess;
  /** Where sources reach it. */
  readonly address: TargetAddress;
  /** Its RAM directory, as it sees it. */
  readonly dir: string;
  /** Its TLS material (undefined when insecure). */
  readonly credentials: AgentCredentials | undefined;
  /** The directories it was given by this process, removed when it stops. */
  readonly #madeDirs: { dir?: string; runDir?: string };
  /** Resolves once it has exited and its own TLS files are removed. */
  readonly #exited: Promise<Deno.CommandStatus>;

  private constructor(
    server: ServerProcess,
    address: TargetAddress,
    dir: string,
    credentials: AgentCredentials | undefined,
    owns: { credentials: boolean; dirs: { dir?: string; runDir?: string } },
  ) {
    this.server = server;
    this.address = address;
    this.dir = dir;
    this.credentials = credentials;
    this.#madeDirs = owns.dirs;
    // Made for this process alone, its TLS files die with it, however it ends (killed by a
    // test, crashed): an agent started again gets new ones.
    this.#exited = server.exited.then(async (status) => {
      if (owns.credentials && credentials) await removeCredentials(credentials);
      return status;
    });
  }

  /**
   * Starts the agent and waits until it listens.
   *
   * @throws Error when it exits first
   */
  static async start(options: AgentProcessOptions = {}): Promise<AgentProcess> {
    const hostname = options.address ?? "127.0.0.1";
    const unique = `${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
    const dir = options.dir ?? `/dev/shm/gangway-agent-${unique}`;
    const runDir = options.runDir ?? `/tmp/gangway-agent-${unique}`;
    const madeDirs = {
      dir: options.dir === undefined ? dir : undefined,
      runDir: options.runDir === undefined ? runDir : undefined,
    };
    const ownsCredentials = !options.insecure && options.credentials === undefined;
    const credentials = options.insecure
      ? undefined
      : options.credentials ?? await makeAgentCredentials(hostname);
    try {
      const server = await ServerProcess.start({
        script: new URL("../cli/agent.ts", import.meta.url),
        permissions: ["--allow-all"],
        args: [
          "--listen",
          `${hostname}:${options.port ?? 0}`,
          "--dir",
          dir,
          "--run-dir",
          runDir,
          ...credentials?.args ?? ["--insecure"],
          ...options.imagesDir ? ["--images", options.imagesDir] : [],
          ...options.sharedDisks?.length ? ["--shared-disks", options.sharedDisks.join(",")] : [],
          ...options.args ?? [],
        ],
        commandPrefix: options.commandPrefix,
        stderr: options.stderr,
        what: "the target agent",
      });
      return new AgentProcess(server, { hostname, port: server.port }, dir, credentials, {
        credentials: ownsCredentials,
        dirs: madeDirs,
      });
    } catch (error) {
      // It may have made them before it failed (a port in use).
      await removeMadeDirs(madeDirs);
      if (ownsCredentials) await removeCredentials(credentials!);
      throw error;
    }
  }

  /**
   * Resolves once the agent has exited, however it ended, and the TLS
   * files made for it are removed.
   */
  get exited(): Promise<Deno.CommandStatus> {
    return this.#exited;
  }

  /**
   * A source's connection to it, with its CA and token (or insecure).
   *
   * @param options.copyDisks copy the gangs' disks (no shared storage)
   */
  async connect(options: { copyDisks?: boolean } = {}): Promise<RemoteTarget> {
    const credentials = this.credentials;
    return await RemoteTarget.connect(this.address, {
      ...credentials ? { ca: credentials.ca, token: credentials.token } : { insecure: true },
      copyDisks: options.copyDisks,
    });
  }

  /**
   * Stops the guests that moved to it (SIGKILL; the agent then removes
   * their files) and waits until it reports them gone.
   */
  async stopGuests(timeoutMs = 10_000): Promise<void> {
    await using target = await this.connect();
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const guests = (await target.keptGuests()).filter((g) => g.alive);
      if (guests.length === 0) return;
      for (const guest of guests) {
        try {
          Deno.kill(guest.pid, "SIGKILL");
        } catch {
          // Gone already.
        }
      }
      if (performance.now() > deadline) {
        throw new Error(
          `Cannot stop the guests at the agent: ${guests.map((g) => g.name).join(", ")} run on`,
        );
      }
      await delay(50);
    }
  }

  /**
   * Stops the agent (guests that moved to it run on) and removes its TLS
   * files and the directories this process named for it (the RAM directory
   * only when it is empty); safe to call twice.
   */
  async stop(): Promise<void> {
    await this.server.stop();
    await this.#exited;
    await removeMadeDirs(this.#madeDirs);
  }

  /** Same as {@linkcode stop}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** Removes TLS material made for an agent; removed already is fine. */
async function removeCredentials(credentials: AgentCredentials): Promise<void> {
  await Deno.remove(credentials.dir, { recursive: true }).catch(() => {});
}

/** Removes the directories named for an agent: its run directory, and its RAM directory when empty. */
async function removeMadeDirs({ dir, runDir }: { dir?: string; runDir?: string }): Promise<void> {
  if (runDir) await Deno.remove(runDir, { recursive: true }).catch(() => {});
  if (dir) await Deno.remove(dir).catch(() => {});
}
