/**
 * A throwaway migration target on this machine: a target agent started as
 * a child process (optionally behind a command prefix, such as a network
 * namespace) and a {@linkcode RemoteTarget} connected to it. The same code
 * moves a gang to another host; here the agent just runs nearby. Closing
 * it stops the guests that moved to it and the agent.
 *
 * @module
 */
import type { MigrationTarget } from "../gang_migration.ts";
import type { Destination } from "../qemu/destination.ts";
import type { QemuGuest } from "../qemu/guest.ts";
import { AgentProcess, type AgentProcessOptions } from "./agent_process.ts";
import type { RemoteTarget } from "./remote_target.ts";

/** Options of {@linkcode LocalTarget.start}: those of the agent it starts, and how disks move. */
export interface LocalTargetOptions extends AgentProcessOptions {
  /** Copy the guests' disks (no shared storage; see `RemoteTargetOptions`). Default false. */
  copyDisks?: boolean;
}

/**
 * A gang's target on this machine.
 *
 * Requires `--allow-run` (deno, openssl, QEMU), `--allow-net`, `--allow-read`, `--allow-write`.
 *
 * @example
 * ```ts
 * import { LocalTarget } from "./local_target.ts";
 * import { migrateQemuGang } from "../gang_migration.ts";
 * import type { QemuGuest } from "../qemu/guest.ts";
 *
 * declare const sources: QemuGuest[];
 * await using target = await LocalTarget.start();
 * const { report, destinations } = await migrateQemuGang(sources, target);
 * console.log(await destinations[0]!.state()); // { status: "running", ... }
 * ```
 */
export class LocalTarget implements MigrationTarget, AsyncDisposable {
  /** The agent process. */
  readonly agent: AgentProcess;
  /** The source's connection to it. */
  readonly remote: RemoteTarget;

  private constructor(agent: AgentProcess, remote: RemoteTarget) {
    this.agent = agent;
    this.remote = remote;
  }

  /** Starts an agent and connects to it. */
  static async start(options: LocalTargetOptions = {}): Promise<LocalTarget> {
    const agent = await AgentProcess.start(options);
    try {
      return new LocalTarget(agent, await agent.connect({ copyDisks: options.copyDisks }));
    } catch (error) {
      await agent.stop();
      throw error;
    }
  }

  /** Directory of the destinations' RAM files: guest NAME's is `DIR/NAME`. */
  get dir(): string {
    return this.agent.dir;
  }

  get token(): string | undefined {
    return this.remote.token;
  }

  prepareDestinations(sources: readonly QemuGuest[]): Promise<Destination[]> {
    return this.remote.prepareDestinations(sources);
  }

  connect(): Promise<Deno.Conn> {
    return this.remote.connect();
  }

  discard(destinations: readonly Destination[]): Promise<void> {
    return this.remote.discard(destinations);
  }

  release(): Promise<void> {
    return this.remote.release();
  }

  /** Stops the guests that moved here and the agent; safe to call twice. */
  async close(): Promise<void> {
    await this.remote.close();
    await this.agent.stopGuests().catch(() => {});
    await this.agent.stop();
  }

  /** Same as {@linkcode close}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
