/**
 * A migration target on this machine: a directory for the destination
 * guests' RAM files, a receiver writing into it, and destination QEMUs
 * started there — all optionally inside a network namespace, so that in
 * the lab the target is a separate host behind a shaped link.
 *
 * A target on another machine would run the same two things (the
 * `receive` command and QEMUs started with `-incoming defer`); this class
 * is the local way of starting them.
 *
 * @module
 */
import { join } from "node:path";
import { QemuGuest } from "../qemu/guest.ts";
import { connectTarget } from "../transport/connect_target.ts";
import { readPemFile, readTokenFile } from "../transport/credentials.ts";
import { makeCerts } from "../transport/make_certs.ts";
import { ReceiverProcess } from "./receiver_process.ts";

/** The TLS material of one target: made for it, removed with it. */
interface Credentials {
  dir: string;
  ca: string;
  token: string;
  receiverArgs: string[];
}

/** A throwaway CA, receiver certificate (for `address`) and token, in a private temporary directory. */
async function makeCredentials(address: string): Promise<Credentials> {
  const dir = await Deno.makeTempDir({ prefix: "gangway-tls-" });
  try {
    const made = await makeCerts(dir, { ips: [address], days: 1 });
    return {
      dir,
      ca: await readPemFile(made.ca, "CA certificate"),
      token: await readTokenFile(made.token),
      receiverArgs: ["--cert", made.cert, "--key", made.key, "--token-file", made.token],
    };
  } catch (error) {
    await Deno.remove(dir, { recursive: true });
    throw error;
  }
}

/** Options of {@linkcode LocalTarget.start}. */
export interface LocalTargetOptions {
  /** Directory of the destination RAM files. Default: a new one under /dev/shm, removed at close. */
  dir?: string;
  /** Command prefix running the target's processes, e.g. `["ip", "netns", "exec", "NS"]`. */
  commandPrefix?: string[];
  /** The target's address, as the source reaches it. Default 127.0.0.1. */
  address?: string;
  /**
   * Send device state over TCP to `address`, from this port up (one port per guest).
   * Default: unix sockets, which only work when both ends share a file system view.
   */
  deviceStatePort?: number;
  /**
   * Plain TCP instead of TLS. By default the target makes a throwaway CA,
   * certificate and token for itself, so that even a lab's link carries
   * guest RAM encrypted and only this process can send to the receiver.
   */
  insecure?: boolean;
  /** More arguments for the receiver (limits). */
  receiverArgs?: string[];
  /**
   * Directory of the destinations' QMP sockets and logs, kept after they
   * close. Default: a new temporary directory per destination.
   */
  runDir?: string;
}

/**
 * The target side of a QEMU gang migration.
 *
 * Requires `--allow-run` (deno, mkdir, openssl, QEMU), `--allow-net`, `--allow-read`, `--allow-write`.
 */
export class LocalTarget implements AsyncDisposable {
  /** Directory of the destination guests' RAM files. */
  readonly dir: string;
  /** The target's address. */
  readonly address: string;
  readonly receiver: ReceiverProcess;
  /** The token a sender must present (undefined with `insecure`). */
  readonly token: string | undefined;
  readonly #credentials: Credentials | undefined;
  readonly #options: LocalTargetOptions;
  readonly #ownsDir: boolean;
  #guests = 0;
  #closed = false;

  private constructor(
    dir: string,
    ownsDir: boolean,
    receiver: ReceiverProcess,
    credentials: Credentials | undefined,
    options: LocalTargetOptions,
  ) {
    this.dir = dir;
    this.#credentials = credentials;
    this.token = credentials?.token;
    this.#ownsDir = ownsDir;
    this.receiver = receiver;
    this.address = options.address ?? "127.0.0.1";
    this.#options = options;
  }

  /** Makes the directory and starts the receiver. */
  static async start(options: LocalTargetOptions = {}): Promise<LocalTarget> {
    const ownsDir = options.dir === undefined;
    const dir = options.dir ??
      `/dev/shm/gangway-target-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
    // Deno's own mkdir asks for --allow-all under /dev.
    const made = await new Deno.Command("mkdir", { args: ["-p", dir], stderr: "piped" }).output();
    if (!made.success) {
      throw new Error(
        `Cannot make the target directory "${dir}": ${
          new TextDecoder().decode(made.stderr).trim()
        }`,
      );
    }
    const address = options.address ?? "127.0.0.1";
    let credentials: Credentials | undefined;
    try {
      credentials = options.insecure ? undefined : await makeCredentials(address);
      const receiver = await ReceiverProcess.start({
        dir,
        listen: { hostname: address },
        commandPrefix: options.commandPrefix,
        args: [...credentials?.receiverArgs ?? ["--insecure"], ...options.receiverArgs ?? []],
        stderr: "inherit",
      });
      return new LocalTarget(dir, ownsDir, receiver, credentials, options);
    } catch (error) {
      if (credentials) await Deno.remove(credentials.dir, { recursive: true }).catch(() => {});
      if (ownsDir) await Deno.remove(dir).catch(() => {});
      throw error;
    }
  }

  /** Connects to the receiver: TLS, its certificate checked against this target's CA (unless insecure). */
  async connect(): Promise<Deno.Conn> {
    const address = { hostname: this.address, port: this.receiver.port };
    return await connectTarget(
      address,
      this.#credentials ? { ca: this.#credentials.ca } : { insecure: true },
    );
  }

  /** Where the destination of a guest keeps its RAM: `DIR/NAME`, the name the receiver writes. */
  ramPath(name: string): string {
    return join(this.dir, name);
  }

  /** Starts a destination for a source guest: same machine, RAM in this target's directory, waiting. */
  async startDestination(
    source: QemuGuest,
  ): Promise<{ guest: QemuGuest; uri?: string; incomingUri?: string }> {
    const index = this.#guests++;
    const guest = await QemuGuest.startDestination(source.machine, {
      name: source.name,
      ramPath: this.ramPath(source.name),
      commandPrefix: this.#options.commandPrefix,
      runDir: this.#options.runDir,
    });
    const port = this.#options.deviceStatePort;
    if (port === undefined) return { guest };
    return {
      guest,
      uri: `tcp:${this.address}:${port + index}`,
      incomingUri: `tcp:${this.address}:${port + index}`,
    };
  }

  /**
   * Stops the receiver and removes the directory if this target made it and
   * it is empty (destinations that run keep their RAM files); safe to call twice.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.receiver.stop();
    if (this.#credentials) {
      await Deno.remove(this.#credentials.dir, { recursive: true }).catch(() => {});
    }
    if (this.#ownsDir) await Deno.remove(this.dir).catch(() => {});
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
