/**
 * The lab's two hosts on one machine: a source and a target network
 * namespace joined by a veth pair that is shaped like an Ethernet link,
 * or, where namespaces cannot be made, the host's loopback.
 *
 * @module
 */
import { formatRate, type LinkShape, linkShape, parseRate, tbfArgs } from "./link_rate.ts";
import { runTool, ToolError } from "./netns_exec.ts";
import {
  deviceName,
  type LabRole,
  namespaceName,
  removeNamespace,
  removeNamespaceSync,
} from "./netns_names.ts";
import { cleanStaleNetworks } from "./netns_stale.ts";
import { errorMessage } from "../_errors.ts";

/** One of the two lab hosts. */
export type LabSide = "source" | "target";

/** How the lab network was made. */
export type LabMode = "netns" | "loopback";

/** One lab host as its programs see it. */
export interface LabHost {
  /** Which host. */
  readonly side: LabSide;
  /** Its network namespace; null in loopback mode. */
  readonly namespace: string | null;
  /** Its end of the veth pair (inside its namespace); null in loopback mode. */
  readonly device: string | null;
  /** Its IPv4 address: listen on it, or connect to it from the other host. */
  readonly address: string;
}

/** Options of {@linkcode LabNetwork.create}. */
export interface LabNetworkOptions {
  /**
   * Rate of the link in each direction, e.g. "1gbit", "100mbit", "2.5gbit",
   * or "none" for no shaping. Ignored in loopback mode. Default "1gbit".
   */
  rate?: string;
  /**
   * "netns" makes namespaces or throws; "loopback" uses the host's
   * loopback; "auto" tries namespaces and falls back to loopback, saying
   * why in {@linkcode LabNetwork.reason}. Default "auto".
   */
  mode?: "auto" | LabMode;
  /** First remove the namespaces of crashed runs. Default true. */
  cleanStale?: boolean;
}

/** Counters of the lab link, from the kernel's own counters of its veth. */
export interface LinkBytes {
  /** Bytes that went from source to target. */
  sourceToTarget: number;
  /** Bytes that went from target to source (mostly TCP acknowledgements). */
  targetToSource: number;
  /**
   * False in loopback mode: `lo` cannot tell directions or programs apart,
   * so `sourceToTarget` then holds all loopback bytes of the host and
   * `targetToSource` is 0.
   */
  exact: boolean;
}

/** The source's address on the lab link. */
export const SOURCE_ADDRESS = "10.250.0.1";
/** The target's address on the lab link. */
export const TARGET_ADDRESS = "10.250.0.2";
/** The lab link's prefix length: a /30 holds exactly the two hosts. */
const PREFIX_LENGTH = 30;
/** Both hosts' address in loopback mode. */
const LOOPBACK_ADDRESS = "127.0.0.1";

const ROLE: Record<LabSide, LabRole> = { source: "src", target: "dst" };
const EXIT_EVENTS = ["unload", "error", "unhandledrejection"] as const;

/**
 * A source and a target host for a migration experiment on one machine.
 *
 * In "netns" mode each host is a network namespace (`gw-PID-ID-src` and
 * `gw-PID-ID-dst`) with loopback up and one end of a veth pair, addressed
 * {@linkcode SOURCE_ADDRESS} and {@linkcode TARGET_ADDRESS}. Each end's
 * egress goes through a tbf qdisc at the link rate, so both directions are
 * shaped. The namespaces have no other route: lab traffic cannot leave.
 *
 * The namespaces are removed by {@linkcode LabNetwork.close}, and also when
 * the process exits or dies of an uncaught error without closing. Only a
 * process killed outright (SIGKILL, or a signal nobody handles: see
 * `exitOnSignal`) leaves them behind; the next run removes them with
 * `cleanStaleNetworks`.
 *
 * Requires `--allow-run` (runs `ip` and `tc`; root for "netns" mode).
 *
 * @example
 * ```ts
 * await using net = await LabNetwork.create({ rate: "1gbit" });
 * const server = net.spawn("target", "qemu-system-x86_64", ["-incoming", "defer"]);
 * const before = await net.bytes();
 * // ... migrate to net.target.address ...
 * const sent = (await net.bytes()).sourceToTarget - before.sourceToTarget;
 * ```
 */
export class LabNetwork implements AsyncDisposable {
  /** "netns", or "loopback" when namespaces were not used. */
  readonly mode: LabMode;
  /** Why this mode: in loopback mode, what stopped the namespaces. */
  readonly reason: string;
  /** The source host. */
  readonly source: LabHost;
  /** The target host. */
  readonly target: LabHost;
  /** The shape of each direction of the link; null when it is not shaped. */
  readonly shape: LinkShape | null;
  #namespaces: string[];
  #closing: Promise<void> | null = null;
  #exitGuard = (event: Event) => this.#removeAtExit(event);

  private constructor(
    mode: LabMode,
    reason: string,
    hosts: [LabHost, LabHost],
    shape: LinkShape | null,
  ) {
    this.mode = mode;
    this.reason = reason;
    [this.source, this.target] = hosts;
    this.shape = shape;
    this.#namespaces = hosts.flatMap((host) => host.namespace ?? []);
    if (this.#namespaces.length > 0) {
      for (const type of EXIT_EVENTS) globalThis.addEventListener(type, this.#exitGuard);
    }
  }

  /**
   * Makes the lab network.
   *
   * Requires `--allow-run` (runs `ip` and `tc`; root for "netns" mode).
   *
   * @param options Rate, mode and stale cleanup
   * @returns The network; close it when done
   * @throws Error when the rate cannot be parsed, or in "netns" mode when
   * the namespaces cannot be made
   */
  static async create(options: LabNetworkOptions = {}): Promise<LabNetwork> {
    const bitsPerSecond = parseRate(options.rate ?? "1gbit");
    const mode = options.mode ?? "auto";
    if (mode === "loopback") return LabNetwork.#loopback("loopback mode was asked for");
    const shape = bitsPerSecond === null ? null : linkShape(bitsPerSecond);
    try {
      if (options.cleanStale ?? true) await cleanStaleNetworks();
      return await LabNetwork.#netns(shape);
    } catch (error) {
      const reason = errorMessage(error);
      if (mode === "netns") throw new Error(`Cannot create the lab network: ${reason}`);
      return LabNetwork.#loopback(reason);
    }
  }

  static #loopback(reason: string): LabNetwork {
    const host = (side: LabSide): LabHost => ({
      side,
      namespace: null,
      device: null,
      address: LOOPBACK_ADDRESS,
    });
    return new LabNetwork("loopback", reason, [host("source"), host("target")], null);
  }

  static async #netns(shape: LinkShape | null): Promise<LabNetwork> {
    const id = randomId();
    const hosts: [LabHost, LabHost] = [
      netnsHost("source", id, SOURCE_ADDRESS),
      netnsHost("target", id, TARGET_ADDRESS),
    ];
    const made: string[] = [];
    try {
      for (const host of hosts) {
        await runTool("ip", ["netns", "add", host.namespace!]);
        made.push(host.namespace!);
      }
      await connect(hosts[0], hosts[1]);
      for (const host of hosts) await configure(host, shape);
    } catch (error) {
      for (const name of made) await removeNamespace(name).catch(() => {});
      throw error;
    }
    return new LabNetwork("netns", "ip netns, veth and tc work here", hosts, shape);
  }

  /**
   * One line for a report: what the two hosts are and how the link is shaped.
   *
   * @returns e.g. "namespaces gw-1-ab-src (10.250.0.1) and gw-1-ab-dst
   * (10.250.0.2) on a veth pair, tbf 1 Gbit/s each way"
   */
  describe(): string {
    if (this.mode === "loopback") {
      return `host loopback ${LOOPBACK_ADDRESS}, unshaped (${this.reason})`;
    }
    const link = this.shape ? `tbf ${formatRate(this.shape.bitsPerSecond)} each way` : "unshaped";
    return `namespaces ${this.source.namespace} (${this.source.address}) and ` +
      `${this.target.namespace} (${this.target.address}) on a veth pair, ${link}`;
  }

  /**
   * A command that runs on one host (`ip netns exec NS cmd ...`; in
   * loopback mode, the command itself).
   *
   * Requires `--allow-run` when it is spawned.
   *
   * @param side The host
   * @param cmd The program
   * @param args Its arguments
   * @param options Deno.Command options other than args (stdio, env, cwd, signal...)
   * @returns The command, not started
   */
  command(
    side: LabSide,
    cmd: string,
    args: readonly string[] = [],
    options: Omit<Deno.CommandOptions, "args"> = {},
  ): Deno.Command {
    const namespace = this.#host(side).namespace;
    if (namespace === null) return new Deno.Command(cmd, { ...options, args: [...args] });
    return new Deno.Command("ip", { ...options, args: ["netns", "exec", namespace, cmd, ...args] });
  }

  /**
   * Starts a long-running program on one host; the caller owns the process.
   * `ip netns exec` replaces itself with the program, so the child's pid and
   * `kill()` are the program's own.
   *
   * Requires `--allow-run`.
   *
   * @param side The host
   * @param cmd The program
   * @param args Its arguments
   * @param options Deno.Command options other than args
   * @returns The running process
   */
  spawn(
    side: LabSide,
    cmd: string,
    args: readonly string[] = [],
    options: Omit<Deno.CommandOptions, "args"> = {},
  ): Deno.ChildProcess {
    this.#checkOpen();
    return this.command(side, cmd, args, options).spawn();
  }

  /**
   * Runs a program on one host to completion.
   *
   * Requires `--allow-run`.
   *
   * @param side The host
   * @param cmd The program
   * @param args Its arguments
   * @returns What it wrote on stdout
   * @throws Error when it fails, with what it wrote on stderr
   */
  async run(side: LabSide, cmd: string, args: readonly string[] = []): Promise<string> {
    this.#checkOpen();
    const output = await this.command(side, cmd, args, { stdin: "null" }).output();
    const stdout = new TextDecoder().decode(output.stdout);
    if (!output.success) {
      const stderr = new TextDecoder().decode(output.stderr).trim();
      const where = this.#host(side).namespace ?? undefined;
      throw new ToolError([cmd, ...args].join(" "), output.code, stderr, where);
    }
    return stdout;
  }

  /**
   * Reads the link's byte counters. Take one reading before and one after
   * a migration and subtract: both methods are then counted by the kernel
   * in the same way, whatever each program thinks it sent.
   *
   * The counters are the source end's veth counters (what it transmitted
   * went to the target, what it received came from it). They count each
   * GSO super-packet once with its headers, so they come to about the TCP
   * payload plus 0.3%, not the 6% more that framing costs on a real wire.
   *
   * Requires `--allow-run` (runs `ip`).
   *
   * @returns The counters now
   */
  async bytes(): Promise<LinkBytes> {
    this.#checkOpen();
    const { namespace, device } = this.source;
    const args = namespace === null
      ? ["-j", "-s", "link", "show", "lo"]
      : ["-n", namespace, "-j", "-s", "link", "show", device!];
    const [link] = JSON.parse(await runTool("ip", args)) as IpLinkStats[];
    const stats = link?.stats64;
    if (!stats) throw new Error(`Cannot read the counters of "${device ?? "lo"}": ip gave none`);
    if (namespace === null) {
      return { sourceToTarget: stats.tx.bytes, targetToSource: 0, exact: false };
    }
    return { sourceToTarget: stats.tx.bytes, targetToSource: stats.rx.bytes, exact: true };
  }

  /**
   * Removes the namespaces and the link; safe to call twice. Programs
   * still running on the hosts are not stopped (stop them first), but they
   * lose the link.
   *
   * Requires `--allow-run` (runs `ip`).
   *
   * @throws Error naming the namespaces that could not be removed
   */
  close(): Promise<void> {
    this.#closing ??= this.#remove();
    return this.#closing;
  }

  /** Closes the network: what `await using` calls. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #remove(): Promise<void> {
    const failures: string[] = [];
    for (const name of this.#namespaces) {
      try {
        await removeNamespace(name);
      } catch (error) {
        failures.push(errorMessage(error));
      }
    }
    // Keep the exit guard when something is left: it tries again at exit.
    if (failures.length > 0) {
      throw new Error(`Cannot remove the lab network: ${failures.join("; ")}`);
    }
    for (const type of EXIT_EVENTS) globalThis.removeEventListener(type, this.#exitGuard);
  }

  /** At exit nothing asynchronous runs any more: remove synchronously. */
  #removeAtExit(event: Event): void {
    if (event.defaultPrevented) return; // the program lives on
    for (const type of EXIT_EVENTS) globalThis.removeEventListener(type, this.#exitGuard);
    for (const name of this.#namespaces) {
      try {
        removeNamespaceSync(name);
      } catch {
        // The process is ending; cleanStaleNetworks() takes what is left.
      }
    }
  }

  #host(side: LabSide): LabHost {
    if (side === "source") return this.source;
    if (side === "target") return this.target;
    throw new Error(`Cannot find lab host "${side}": expected "source" or "target"`);
  }

  #checkOpen(): void {
    if (this.#closing) throw new Error(`Cannot use the lab network: it is closed`);
  }
}

/** What `ip -j -s link show` says of a device, the parts read here. */
interface IpLinkStats {
  stats64?: { tx: { bytes: number }; rx: { bytes: number } };
}

function netnsHost(side: LabSide, id: string, address: string): LabHost {
  const role = ROLE[side];
  return { side, namespace: namespaceName(Deno.pid, id, role), device: deviceName(role), address };
}

/** Makes the veth pair with its two ends already in their namespaces. */
async function connect(source: LabHost, target: LabHost): Promise<void> {
  await runTool("ip", [
    ...["-n", source.namespace!, "link", "add", source.device!, "type", "veth"],
    ...["peer", "name", target.device!, "netns", target.namespace!],
  ]);
}

/** Addresses one host's end, brings it and loopback up, and shapes its egress. */
async function configure(host: LabHost, shape: LinkShape | null): Promise<void> {
  const ns = host.namespace!;
  const device = host.device!;
  await runTool("ip", ["-n", ns, "addr", "add", `${host.address}/${PREFIX_LENGTH}`, "dev", device]);
  await runTool("ip", ["-n", ns, "link", "set", "lo", "up"]);
  // No IPv6 link-local address: its neighbour discovery would add traffic
  // to the link's counters that neither migration method sent.
  await runTool("ip", ["-n", ns, "link", "set", device, "addrgenmode", "none", "up"]);
  if (shape) await runTool("tc", ["-n", ns, ...tbfArgs(device, shape)]);
}

/** 32 random bits in hex: unique among one process's networks. */
function randomId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(4));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}
