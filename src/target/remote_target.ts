/**
 * A target agent on another host, as the source sees it: the
 * {@linkcode MigrationTarget} `migrateQemuGang()` moves a gang to. The
 * agent starts the destinations from the source guests' machine
 * descriptions (kernels and initrds sent once when it lacks them),
 * receives the RAM, and each guest's device state travels through a
 * {@linkcode DeviceStateRelay} over the agent's port. Without shared
 * storage (`copyDisks`), each disk's NBD export at the destination is
 * reached through a relay of the same kind, and the source mirrors into it.
 *
 * @module
 */
import { join } from "node:path";
import type { MigrationTarget } from "../gang_migration.ts";
import {
  type Destination,
  type DestinationState,
  NotLoadedError,
  type RunWhenLoadedOptions,
} from "../qemu/destination.ts";
import type { QemuGuest } from "../qemu/guest.ts";
import type { DiskTarget } from "../qemu/block_mirror.ts";
import { connectTarget, type TargetAddress } from "../transport/connect_target.ts";
import { AgentClient, type AgentClientOptions, NotSentError } from "./agent_client.ts";
import type { KeptGuest } from "./kept_guests.ts";
import { DeviceStateRelay } from "./device_state_relay.ts";
import { makeRelayDir } from "./_relay_dir.ts";
import { describeMachine } from "./describe_machine.ts";
import { type FileRef, isCopied, type MachineDescription } from "./machine_description.ts";

/** Options of {@linkcode RemoteTarget.connect}: TLS (a CA) or insecure, and the agent's token. */
export interface RemoteTargetOptions extends AgentClientOptions {
  /**
   * No shared storage: the agent makes each disk afresh over the same base
   * image (found by hash, or sent once) and the source copies the guest's
   * overlay into it while the RAM moves. Default false: the disks are on
   * storage both hosts see.
   */
  copyDisks?: boolean;
}

/**
 * A gang's target behind a target agent.
 *
 * Requires `--allow-net` (the agent), `--allow-read` (kernels, initrds)
 * and `--allow-write` (the relays' unix sockets in a temporary directory;
 * those that sources killed in the middle of a migration left are removed).
 *
 * @example
 * ```ts
 * import { RemoteTarget } from "./remote_target.ts";
 * import { migrateQemuGang } from "../gang_migration.ts";
 * import type { QemuGuest } from "../qemu/guest.ts";
 * import { readPemFile, readTokenFile } from "../transport/credentials.ts";
 *
 * declare const sources: QemuGuest[];
 * await using target = await RemoteTarget.connect({ hostname: "10.0.0.2", port: 7100 }, {
 *   ca: await readPemFile("ca.pem", "CA certificate"),
 *   token: await readTokenFile("token"),
 * });
 * const { report } = await migrateQemuGang(sources, target);
 * ```
 */
export class RemoteTarget implements MigrationTarget, AsyncDisposable {
  /** The control connection. */
  readonly agent: AgentClient;
  readonly #options: RemoteTargetOptions;
  #key: string | undefined;
  #relayDir: string | undefined;
  readonly #relays = new Set<DeviceStateRelay>();
  /** The device-state connections opened so far, in turn. */
  #opening: Promise<unknown> = Promise.resolve();

  private constructor(agent: AgentClient, options: RemoteTargetOptions) {
    this.agent = agent;
    this.#options = options;
  }

  /**
   * Connects to the agent and presents the token.
   *
   * @throws Error when it cannot be reached or used (wrong CA, token, busy)
   */
  static async connect(
    address: TargetAddress,
    options: RemoteTargetOptions,
  ): Promise<RemoteTarget> {
    return new RemoteTarget(await AgentClient.connect(address, options), options);
  }

  /** The gang's key, which its RAM connection presents (once prepared). */
  get token(): string | undefined {
    return this.#key;
  }

  /**
   * A dry run of {@linkcode prepareDestinations}: has the agent check the
   * sources' descriptions against its limits, its accelerators and shared
   * disks and the guests it holds, starting nothing.
   *
   * @returns Whether it is busy with another gang now, and the files it would be sent
   * @throws Error saying why it would refuse the gang
   */
  async check(sources: readonly QemuGuest[]): Promise<{ busy: boolean; missing: FileRef[] }> {
    const guests = await this.#describe(sources);
    const answer = await this.agent.request("check", { guests });
    return {
      busy: answer.busy === true,
      missing: Array.isArray(answer.missing) ? answer.missing as FileRef[] : [],
    };
  }

  #describe(sources: readonly QemuGuest[]): Promise<MachineDescription[]> {
    const copyDisks = this.#options.copyDisks ?? false;
    return Promise.all(sources.map((s) => describeMachine(s.name, s.machine, { copyDisks })));
  }

  /** Describes the sources, sends the files the agent lacks, and has it start the destinations. */
  async prepareDestinations(sources: readonly QemuGuest[]): Promise<Destination[]> {
    const guests = await this.#describe(sources);
    const paths = filePaths(sources, guests);
    const timeoutMs = prepareTimeoutMs(guests);
    let answer = await this.agent.request("prepare", { guests }, timeoutMs);
    if (Array.isArray(answer.missing)) {
      for (const ref of answer.missing as FileRef[]) {
        const path = paths.get(ref.sha256);
        if (!path) throw new Error(`The target agent asked for a file no guest uses (${ref.name})`);
        await this.agent.sendFile(ref, path);
      }
      answer = await this.agent.request("prepare", { guests }, timeoutMs);
    }
    if (typeof answer.key !== "string") {
      throw new Error("Cannot prepare the destinations: the target agent still lacks files");
    }
    this.#key = answer.key;
    this.#relayDir ??= await makeRelayDir();
    // Each guest's device-state path is opened now, not in the downtime.
    return sources.map((source, i) =>
      new RemoteDestination(
        this,
        source.name,
        this.#relay(source.name),
        (guests[i]!.disks ?? []).flatMap((disk, index) =>
          isCopied(disk) ? [this.#diskRelay(source.name, index)] : []
        ),
      )
    );
  }

  /** Opens the RAM connection. */
  async connect(): Promise<Deno.Conn> {
    return await connectTarget(this.agent.address, this.#options);
  }

  /** Has the agent stop these destinations and remove their files. */
  async discard(destinations: readonly Destination[]): Promise<void> {
    if (destinations.length === 0) return;
    // After a failure, with the sources resumed: an agent that does not answer soon abandons the
    // gang anyway once the control connection closes.
    await this.agent.request("discard", { guests: destinations.map((d) => d.name) }, 10_000);
  }

  /** Ends the gang at the agent; the guests that run there stay. */
  async release(): Promise<void> {
    await this.agent.request("release");
  }

  /** The guests that moved to the agent's host and run there. */
  async keptGuests(): Promise<KeptGuest[]> {
    return (await this.agent.request("guests")).guests as KeptGuest[];
  }

  /** A relay for one guest's copied disk: its NBD export, reached through the agent's port. */
  #diskRelay(guest: string, index: number): DiskTarget & { relay: DeviceStateRelay } {
    const relay = this.#relay(guest, (key) => this.agent.openDiskCopy(key, guest, index), "nbd");
    return { index, socket: relay.path, relay };
  }

  /**
   * A relay for one guest's device state (or another of its streams),
   * listening in this target's temporary directory.
   */
  #relay(
    guest: string,
    openWith: (key: string) => Promise<Deno.Conn> = (key) => this.agent.openDeviceState(key, guest),
    suffix = "migrate",
  ): DeviceStateRelay {
    const key = this.#key;
    if (!key || !this.#relayDir) throw new Error(`Cannot relay guest "${guest}": no gang prepared`);
    const open = () => openWith(key);
    // One at a time: a burst of handshakes from one address makes the agent drop the oldest.
    const opened = this.#opening.then(open);
    this.#opening = opened.catch(() => {});
    // Numbered, not named: a unix socket's path must stay under 108 bytes.
    const relay = DeviceStateRelay.listen(
      join(this.#relayDir, `${this.#relays.size}.${suffix}`),
      opened,
      open,
    );
    this.#relays.add(relay);
    return relay;
  }

  /** Closes the control connection (an unreleased gang is then abandoned by the agent). */
  async close(): Promise<void> {
    await Promise.all([...this.#relays].map((relay) => relay.close()));
    this.agent.close();
    if (this.#relayDir) await Deno.remove(this.#relayDir, { recursive: true }).catch(() => {});
    this.#relayDir = undefined;
  }

  /** Same as {@linkcode close}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** A destination at the agent, driven over the control connection. */
class RemoteDestination implements Destination {
  readonly name: string;
  readonly diskTargets: readonly (DiskTarget & { relay: DeviceStateRelay })[];
  readonly #target: RemoteTarget;
  readonly #relay: DeviceStateRelay;

  constructor(
    target: RemoteTarget,
    name: string,
    relay: DeviceStateRelay,
    diskTargets: readonly (DiskTarget & { relay: DeviceStateRelay })[],
  ) {
    this.#target = target;
    this.name = name;
    this.#relay = relay;
    this.diskTargets = diskTargets;
  }

  /** The relays close (each carried the one connection of a mirror), then the agent ends the exports. */
  async endDiskTargets(): Promise<void> {
    if (this.diskTargets.length === 0) return;
    await Promise.all(this.diskTargets.map((target) => target.relay.close()));
    await this.#request("end-disk-copies");
  }

  async state(): Promise<DestinationState> {
    return (await this.#request("state")).state as DestinationState;
  }

  /** The agent made the destination listen when it started it; the relay waits here. */
  listen(): Promise<string> {
    return Promise.resolve(`unix:${this.#relay.path}`);
  }

  async runWhenLoaded(
    timeoutMs: number,
    { paused = false }: RunWhenLoadedOptions = {},
  ): Promise<DestinationState> {
    let answer: Record<string, unknown>;
    try {
      answer = await this.#request(
        "run-when-loaded",
        { timeoutMs, ...(paused && { paused }) },
        timeoutMs + 10_000,
      );
    } catch (error) {
      // Never asked, so surely not started: its source may run again.
      if (error instanceof NotSentError) {
        throw new NotLoadedError(`the agent was not asked to run it: ${error.message}`, {
          cause: error,
        });
      }
      throw error;
    }
    if (answer.loaded !== true) throw new NotLoadedError(String(answer.error));
    return answer.state as DestinationState;
  }

  async exitNote(): Promise<string> {
    const relayed = this.#relay.error ? ` (device state: ${this.#relay.error.message})` : "";
    const { note } = await this.#request("state").catch(() => ({ note: "" }));
    return `${typeof note === "string" ? note : ""}${relayed}`;
  }

  async unlisten(): Promise<void> {
    await this.#relay.close();
  }

  #request(
    op: string,
    fields: Record<string, unknown> = {},
    timeoutMs?: number,
  ): Promise<Record<string, unknown>> {
    return this.#target.agent.request(op, { guest: this.name, ...fields }, timeoutMs);
  }
}

/**
 * How long the agent may take to prepare: two minutes, and more for the
 * base images of copied disks, which it reads whole to hash them (30 s a
 * GB: a file read from a slow disk on a busy host).
 */
function prepareTimeoutMs(descriptions: readonly MachineDescription[]): number {
  const bases = new Map<string, number>();
  for (const description of descriptions) {
    for (const disk of description.disks ?? []) {
      if (isCopied(disk)) bases.set(disk.base.sha256, disk.base.size);
    }
  }
  const bytes = [...bases.values()].reduce((sum, size) => sum + size, 0);
  return 120_000 + Math.ceil(bytes / 1e9) * 30_000;
}

/** Each file a description names, by hash: the source's own path of it. */
function filePaths(
  sources: readonly QemuGuest[],
  descriptions: readonly MachineDescription[],
): Map<string, string> {
  const paths = new Map<string, string>();
  descriptions.forEach((description, i) => {
    const machine = sources[i]!.machine;
    const image = machine.image;
    if (description.kernel && image) paths.set(description.kernel.sha256, image.kernel);
    if (description.initrd && image) paths.set(description.initrd.sha256, image.initrd);
    description.disks?.forEach((disk, index) => {
      const base = machine.disks?.[index]?.base;
      if (isCopied(disk) && base) paths.set(disk.base.sha256, base);
    });
  });
  return paths;
}
