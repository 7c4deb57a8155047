/**
 * The target host: the target agent that runs there (`deno task agent`),
 * a source's connection to it ({@linkcode RemoteTarget}), and the ways to
 * start one from this machine ({@linkcode AgentProcess},
 * {@linkcode LocalTarget}). See docs/agent.md.
 *
 * Importing this module starts nothing and needs no permission.
 *
 * @example Evacuate two guests to another host's agent
 * ```ts
 * import { RemoteTarget } from "./mod.ts";
 * import { migrateQemuGang } from "../gang_migration.ts";
 * import { QemuGuest } from "../qemu/mod.ts";
 * import { readPemFile, readTokenFile } from "../transport/mod.ts";
 *
 * await using target = await RemoteTarget.connect({ hostname: "10.0.0.2", port: 7100 }, {
 *   ca: await readPemFile("ca.pem", "CA certificate"),
 *   token: await readTokenFile("token"),
 * });
 * const sources = [await QemuGuest.attach("/run/vm1.qmp"), await QemuGuest.attach("/run/vm2.qmp")];
 * const { report } = await migrateQemuGang(sources, target);
 * ```
 *
 * @module
 */
export {
  type AgentEvent,
  type AgentOptions,
  type KeptGuest,
  serveAgent,
  type ServeAgentOptions,
} from "./agent.ts";
export { AgentClient, type AgentClientOptions, NotSentError } from "./agent_client.ts";
export { AgentError } from "./agent_protocol.ts";
export { DeviceStateRelay } from "./device_state_relay.ts";
export {
  type AgentCredentials,
  AgentProcess,
  type AgentProcessOptions,
  makeAgentCredentials,
} from "./agent_process.ts";
export { describeMachine, type DescribeOptions } from "./describe_machine.ts";
export {
  checkDescription,
  type CopiedDisk,
  DescriptionError,
  type DescriptionLimits,
  type FileRef,
  isCopied,
  type MachineDescription,
} from "./machine_description.ts";
export { LocalTarget, type LocalTargetOptions } from "./local_target.ts";
export { RemoteTarget, type RemoteTargetOptions } from "./remote_target.ts";
export {
  ReceiverProcess,
  type ReceiverProcessEvent,
  type ReceiverProcessOptions,
} from "./receiver_process.ts";
export { type ServerEvent, ServerProcess, type ServerProcessOptions } from "./server_process.ts";
