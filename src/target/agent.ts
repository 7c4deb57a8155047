/**
 * The target agent: the long-lived server on a target host that a source
 * evacuates its gang to. On its one port it takes a source's control
 * connection (authenticated by the token), starts the gang's destination
 * QEMUs itself from checked machine descriptions, receives the gang's RAM
 * into their RAM files, carries each guest's device state into its
 * destination, and starts them when the source says so. See
 * docs/agent.md.
 *
 * @module
 */
import { connectUnix } from "./_unix.ts";
import {
  encodeText,
  FrameType,
  frameTypeName,
  MAX_BODY_BYTES,
  ProtocolError,
} from "../transfer/protocol.ts";
import { TimeoutError, withTimeout } from "../transfer/frame_io.ts";
import { receiveGangAfterHello, sameSecret } from "../transfer/receiver.ts";
import {
  AGENT_VERSION,
  decodeJson,
  encodeJson,
  FrameChannel,
  MAX_CONTROL_BYTES,
} from "./agent_protocol.ts";
import { AgentHost, type AgentOptions } from "./agent_host.ts";
import { ControlSession } from "./agent_control.ts";
import { pipeBothWays } from "./_pipe.ts";

export type { AgentEvent, AgentOptions, KeptGuest } from "./agent_host.ts";

/** Options of {@linkcode serveAgent}. */
export interface ServeAgentOptions extends AgentOptions {
  /** Stops the agent (a gang under way is abandoned, as if its source died). */
  signal?: AbortSignal;
  /** Connections allowed before their first frame at once; more are closed at once. Default 16. */
  maxPendingHandshakes?: number;
}

/**
 * Serves sources until `signal` aborts.
 *
 * Requires `--allow-all` in practice: QEMU (`--allow-run`), the page
 * library (`--allow-ffi`), and files under /dev/shm and /run.
 *
 * @example
 * ```ts
 * const listener = listenForSenders({ hostname: "0.0.0.0", port: 7100 }, { cert, key });
 * await serveAgent(listener, { dir: "/dev/shm/gangway", runDir: "/run/gangway-agent", token, ... });
 * ```
 */
export async function serveAgent(
  listener: Deno.Listener,
  options: ServeAgentOptions,
): Promise<void> {
  const host = new AgentHost(options);
  await host.recoverLeftovers();
  const maxPending = options.maxPendingHandshakes ?? 16;
  const pending = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();
  const stop = new Promise<void>((resolve) => {
    if (options.signal?.aborted) resolve();
    options.signal?.addEventListener("abort", () => resolve(), { once: true });
  });
  host.log({ event: "listening", address: describeAddress(listener.addr) });
  const accepting = (async () => {
    for await (const conn of listener) {
      if (pending.size >= maxPending) {
        host.log({ event: "refused", peer: peerName(conn), error: "too many pending connections" });
        closeQuietly(conn);
        continue;
      }
      pending.add(conn);
      const task = serveConnection(host, conn, () => pending.delete(conn))
        .catch((error) =>
          host.log({ event: "failed", peer: peerName(conn), error: messageOf(error) })
        )
        .finally(() => pending.delete(conn));
      tasks.add(task);
      task.finally(() => tasks.delete(task));
    }
  })().catch((error) => host.log({ event: "failed", error: messageOf(error) }));
  await stop;
  listener.close();
  await accepting;
  for (const conn of pending) closeQuietly(conn);
  host.closeConnections();
  await Promise.allSettled(tasks);
  await host.close();
}

/** Reads a connection's first frame within the handshake timeout and hands it to its kind's handler. */
async function serveConnection(
  host: AgentHost,
  conn: Deno.Conn,
  handshaken: () => void,
): Promise<void> {
  const peer = peerName(conn);
  const channel = new FrameChannel(conn, {
    maxBody: MAX_BODY_BYTES,
    writeTimeoutMs: host.options.idleTimeoutMs,
  });
  const timeoutMs = host.options.handshakeTimeoutMs;
  let first;
  try {
    first = await withTimeout(
      (async () => {
        if (isTls(conn)) await conn.handshake();
        return await channel.reader.next(undefined, MAX_CONTROL_BYTES);
      })(),
      timeoutMs,
      () => new TimeoutError(`No handshake within ${timeoutMs / 1000} s`),
    );
  } catch (error) {
    channel.close();
    throw error;
  } finally {
    handshaken();
  }
  if (!first) return channel.close();
  host.track(channel);
  try {
    switch (first.type) {
      case FrameType.Control:
        return await serveControl(host, channel, peer, decodeJson(first.body, "The hello"));
      case FrameType.Hello:
        return await serveRam(host, channel, first.body);
      case FrameType.DeviceState:
        return await serveDeviceState(
          host,
          channel,
          decodeJson(first.body, "The device-state hello"),
        );
      default:
        throw new ProtocolError(`Unexpected ${frameTypeName(first.type)} frame first`);
    }
  } catch (error) {
    await refuse(channel, error);
    throw error;
  } finally {
    host.untrack(channel);
    channel.close();
  }
}

async function serveControl(
  host: AgentHost,
  channel: FrameChannel,
  peer: string,
  hello: Record<string, unknown>,
): Promise<void> {
  const token = host.options.token;
  // The token first: an unauthenticated peer learns nothing, not even whether the agent is busy.
  if (
    hello.op !== "hello" || (token !== undefined && !sameSecret(String(hello.token ?? ""), token))
  ) {
    throw new ProtocolError("Refused: wrong or missing token");
  }
  if (hello.version !== AGENT_VERSION) {
    throw new ProtocolError(
      `Refused: this agent speaks version ${AGENT_VERSION}, not ${hello.version}`,
    );
  }
  if (host.busy) throw new ProtocolError("Target agent is busy with another gang");
  await channel.write(encodeJson(FrameType.Control, {
    id: hello.id ?? 0,
    ok: true,
    version: AGENT_VERSION,
    maxGuests: host.options.maxGuests,
    maxMemoryMiB: host.options.maxMemoryMiB,
  }));
  host.log({ event: "source", peer });
  await new ControlSession(host, channel, peer).run();
}

async function serveRam(
  host: AgentHost,
  channel: FrameChannel,
  helloBody: Uint8Array,
): Promise<void> {
  const gang = host.gang;
  const options = host.options;
  // The gang's key is the token: without a prepared gang nothing matches it.
  const token = gang?.key ?? crypto.randomUUID();
  const ramBytes = Math.max(0, ...(gang?.names ?? []).map((name) => gang!.ramBytes(name)!));
  await receiveGangAfterHello(channel.conn, channel.reader, helloBody, {
    ...options.receiver,
    dir: options.dir,
    token,
    maxGuests: gang?.names.length ?? 0,
    maxGuestBytes: ramBytes,
    expectedGuests: gang?.names.map((name) => ({ name, size: gang.ramBytes(name)! })),
    log: (event) => host.log({ ...event, event: `ram-${event.event}` }),
  });
}

async function serveDeviceState(
  host: AgentHost,
  channel: FrameChannel,
  hello: Record<string, unknown>,
): Promise<void> {
  const gang = host.gang;
  if (!gang || typeof hello.key !== "string" || !sameSecret(hello.key, gang.key)) {
    throw new ProtocolError("Refused: wrong or missing key");
  }
  const { incomingPath, guest } = gang.get(hello.guest);
  const incoming = await connectUnix(incomingPath, guest.name);
  try {
    await channel.write(encodeJson(FrameType.DeviceState, { ok: true }));
    await pipeBothWays(channel.conn, incoming);
  } finally {
    closeQuietly(incoming);
  }
}

/** Tells the peer why it is refused, if it can still be told. */
async function refuse(channel: FrameChannel, error: unknown): Promise<void> {
  await withTimeout(
    channel.write(encodeText(FrameType.Error, messageOf(error))),
    2_000,
    () => new Error("no answer"),
  ).catch(() => {});
}

function isTls(conn: Deno.Conn): conn is Deno.TlsConn {
  return typeof (conn as Partial<Deno.TlsConn>).handshake === "function";
}

function peerName(conn: Deno.Conn): string {
  return describeAddress(conn.remoteAddr);
}

function describeAddress(addr: Deno.Addr): string {
  return addr.transport === "tcp" || addr.transport === "udp"
    ? `${addr.hostname}:${addr.port}`
    : addr.transport;
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Closed already.
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
