/**
 * Measures what a bulk TCP transfer gets through the lab link, so a lab
 * report can state the link it actually had.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import type { LabNetwork, LabSide } from "./netns.ts";

/** Options of {@linkcode measureThroughput}. */
export interface ThroughputOptions {
  /** Bytes to send. Default 50 MB. */
  bytes?: number;
  /** The sending host; the other one receives. Default "source". */
  from?: LabSide;
  /** Give up after this long. Default 60 s. */
  timeoutMs?: number;
}

/** What {@linkcode measureThroughput} measured. */
export interface Throughput {
  /** Bytes received. */
  bytes: number;
  /** Seconds from the sender's connect to the receiver's last byte. */
  seconds: number;
  /** TCP payload bits per second (goodput). */
  bitsPerSecond: number;
}

const PEER = new URL("./link_probe_peer.ts", import.meta.url);

/**
 * Sends bytes over one TCP connection from one lab host to the other,
 * with a small Deno program on each host, and times it at the receiver.
 *
 * Requires `--allow-run` and `--allow-read` (starts Deno on each host).
 *
 * @param network The lab network
 * @param options Size, direction and time limit
 * @returns The goodput measured
 * @throws Error when either end fails or the time limit passes
 *
 * @example
 * ```ts
 * import { measureThroughput } from "./link_probe.ts";
 * import { formatRate } from "./link_rate.ts";
 * import { LabNetwork } from "./netns.ts";
 *
 * await using net = await LabNetwork.create({ rate: "1gbit" });
 * const { bitsPerSecond } = await measureThroughput(net, { bytes: 100e6 });
 * console.log(`${formatRate(bitsPerSecond)} through ${net.describe()}`);
 * ```
 */
export async function measureThroughput(
  network: LabNetwork,
  options: ThroughputOptions = {},
): Promise<Throughput> {
  const bytes = options.bytes ?? 50e6;
  const from = options.from ?? "source";
  const to: LabSide = from === "source" ? "target" : "source";
  const address = network[to].address;
  const timeoutMs = options.timeoutMs ?? 60_000;
  const timeout = AbortSignal.timeout(timeoutMs);
  const peer = (side: LabSide, args: string[]) =>
    network.spawn(
      side,
      Deno.execPath(),
      ["run", "--no-config", "--allow-net", peerPath(), ...args],
      {
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal: timeout,
      },
    );

  const receiver = peer(to, ["receive", address]);
  const lines = readLines(receiver.stdout);
  let sender: Deno.ChildProcess | null = null;
  try {
    const { port } = JSON.parse(await nextLine(lines, receiver, "receiver")) as { port: number };
    sender = peer(from, ["send", address, String(port), String(bytes)]);
    const sent = await sender.output();
    if (!sent.success) throw peerFailure("sender", sent);
    const { start } = JSON.parse(new TextDecoder().decode(sent.stdout)) as { start: number };
    const received = JSON.parse(await nextLine(lines, receiver, "receiver")) as {
      bytes: number;
      end: number;
    };
    const seconds = (received.end - start) / 1000;
    return { bytes: received.bytes, seconds, bitsPerSecond: received.bytes * 8 / seconds };
  } catch (error) {
    if (!timeout.aborted) throw error;
    throw new Error(`Cannot measure the link: no result within ${timeoutMs} ms`);
  } finally {
    await stop(receiver);
    if (sender) await stop(sender);
    await lines.return(undefined);
  }
}

function peerPath(): string {
  if (PEER.protocol !== "file:") {
    throw new Error(`Cannot start the link probe "${PEER.href}": it must be a local file`);
  }
  return fileURLToPath(PEER);
}

async function* readLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let pending = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    pending += text;
    for (let end = pending.indexOf("\n"); end >= 0; end = pending.indexOf("\n")) {
      yield pending.slice(0, end);
      pending = pending.slice(end + 1);
    }
  }
}

/** The child's next line; when it has none, an error with its exit status and stderr. */
async function nextLine(
  lines: AsyncGenerator<string>,
  child: Deno.ChildProcess,
  who: string,
): Promise<string> {
  const { value, done } = await lines.next();
  if (!done) return value;
  const status = await child.status;
  const stderr = await new Response(child.stderr).text().catch(() => "");
  throw new Error(
    `Cannot measure the link: the ${who} ended without a result (${how(status)}) ${stderr}`.trim(),
  );
}

function peerFailure(who: string, output: Deno.CommandOutput): Error {
  const stderr = new TextDecoder().decode(output.stderr).trim();
  return new Error(`Cannot measure the link: the ${who} failed (${how(output)}) ${stderr}`.trim());
}

function how(status: Deno.CommandStatus): string {
  return status.signal ? `killed by ${status.signal}` : `exit code ${status.code}`;
}

/** Kills a child that still runs and waits for it, releasing its pipes. */
async function stop(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGKILL");
  } catch {
    // Already exited.
  }
  await child.status;
  await child.stderr.cancel().catch(() => {});
}
