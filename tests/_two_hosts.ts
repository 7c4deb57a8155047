/**
 * Two hosts for tests, as the lab makes them: host A and host B are
 * network namespaces joined by a veth pair, and host B also has its own
 * mount namespace (private /dev/shm, /tmp and /run) and runs the target
 * agent. Closing ends every process of both hosts and removes them.
 *
 * @module
 */
import { LabNetwork } from "../src/lab/netns.ts";
import { killAndWait, namespacePids } from "../src/lab/_processes.ts";
import { privateHostPrefix } from "../src/lab/target_host.ts";
import {
  type AgentCredentials,
  AgentProcess,
  makeAgentCredentials,
} from "../src/target/agent_process.ts";

/** The agent's port on host B. */
export const AGENT_PORT = 7100;

/** Host A and host B. */
export class TwoHosts implements AsyncDisposable {
  /** The network: `source` is host A, `target` host B. */
  readonly net: LabNetwork;
  /** The agent's TLS material, made on host A. */
  readonly credentials: AgentCredentials;

  private constructor(net: LabNetwork, credentials: AgentCredentials) {
    this.net = net;
    this.credentials = credentials;
  }

  /** Makes the namespaces (root needed) and the agent's credentials. */
  static async open(): Promise<TwoHosts> {
    const net = await LabNetwork.create({ rate: "none", mode: "netns" });
    try {
      return new TwoHosts(net, await makeAgentCredentials(net.target.address));
    } catch (error) {
      await net.close();
      throw error;
    }
  }

  /** The command prefix of a program on host A. */
  get onA(): string[] {
    return ["ip", "netns", "exec", this.net.source.namespace!];
  }

  /** Starts the target agent on host B (its RAM in B's /dev/shm/gangway), with more flags (limits). */
  async startAgent(args: string[] = []): Promise<AgentProcess> {
    return await AgentProcess.start({
      address: this.net.target.address,
      port: AGENT_PORT,
      credentials: this.credentials,
      dir: "/dev/shm/gangway",
      runDir: "/run/gangway-agent",
      commandPrefix: privateHostPrefix(this.net.target.namespace!, this.credentials.dir),
      args,
    });
  }

  /** The pids of host B's processes. */
  async pidsOnB(): Promise<number[]> {
    return await namespacePids(this.net.target.namespace!);
  }

  /** Ends every process of both hosts, removes the namespaces and the credentials. */
  async close(): Promise<void> {
    for (const host of [this.net.source, this.net.target]) {
      await killAndWait(await namespacePids(host.namespace!));
    }
    await this.net.close();
    await Deno.remove(this.credentials.dir, { recursive: true }).catch(() => {});
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
