/**
 * What the target agent's tests share: small destinations that are never
 * booted, and waiting for the agent's events.
 *
 * @module
 */
import type { AgentProcess } from "../src/target/agent_process.ts";
import type { ServerEvent } from "../src/target/server_process.ts";
import type { QemuGuest } from "../src/qemu/guest.ts";
import type { QemuMachine } from "../src/qemu/qemu_args.ts";
import { delay } from "../src/_delay.ts";
import { findQemus } from "../src/qemu/discover.ts";
import { testImage } from "./qemu_helpers.ts";
import { PROTOCOL_VERSION } from "../src/transfer/protocol.ts";
import { encodeHello } from "../src/transfer/hello_frame.ts";

/** The machine of a small destination of the test image. */
export async function smallMachine(memoryMiB = 32): Promise<QemuMachine> {
  return {
    memoryMiB,
    backendId: "gangway-ram",
    cpus: 1,
    accelerator: "tcg",
    image: await testImage(),
    kernelArgs: ["console=ttyS0", "panic=-1"],
    extraArgs: [],
    qemuBinary: "qemu-system-x86_64",
  };
}

/** A source guest as `prepareDestinations()` reads it: a name and a machine. */
export async function sourceLike(name: string, memoryMiB = 32): Promise<QemuGuest> {
  return { name, machine: await smallMachine(memoryMiB) } as QemuGuest;
}

/** The HELLO of a RAM connection for one small destination, presenting the gang's key. */
export function ramHello(key: string, name: string, memoryMiB = 32): Uint8Array {
  return encodeHello({
    version: PROTOCOL_VERSION,
    pageSize: 4096,
    seed: 1n,
    token: key,
    guests: [{ name, size: memoryMiB * 2 ** 20 }],
  });
}

/** The first event of the agent that `matches`, waited for `timeoutMs` at most (undefined then). */
export async function eventOf(
  agent: AgentProcess,
  matches: (event: ServerEvent) => boolean,
  timeoutMs = 20_000,
): Promise<ServerEvent | undefined> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const found = agent.server.events.find(matches);
    if (found || performance.now() > deadline) return found;
    await delay(50);
  }
}

/** The pids of the QEMUs whose RAM file is in `dir`. */
export async function qemusIn(dir: string): Promise<number[]> {
  const { usable } = await findQemus();
  return usable.filter((q) => q.commandLine.instance.ramPath.startsWith(`${dir}/`)).map((q) =>
    q.pid
  );
}

/** The agent process's peak resident memory, in bytes. */
export async function peakRss(agent: AgentProcess): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${agent.server.process.pid}/status`);
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)![1]) * 1024;
}
