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
import { closeQuietly } from "../_close_quietly.ts";
import { connectUnix } from "./_unix.ts";
import {
  encodeText,
  FrameType,
  frameTypeName,
  HEADER_BYTES,
  MAX_BODY_BYTES,
  ProtocolError,
} from "../transfer/protocol.ts";
import { TimeoutError } from "../transfer/frame_io.ts";
import { withTimeout } from "../_delay.ts";
import { receiveAuthenticatedGang } from "../transfer/receiver.ts";
import type { ReceiverOptions } from "../transfer/receiver_options.ts";
import { readSenderHandshake, sameSecret, TOKEN_REFUSAL } from "../transfer/sender_handshake.ts";
import {
  acceptConnections,
  addressText,
  type PendingConnection,
} from "../transfer/accept_connections.ts";
import {
  AGENT_VERSION,
  decodeJson,
  encodeJson,
  FrameChannel,
  MAX_CONTROL_BYTES,
} from "./agent_protocol.ts";
import { AgentHost, type AgentOptions } from "./agent_host.ts";
import { checkAgentDirs } from "./agent_dirs.ts";
import { ControlSession } from "./agent_control.ts";
import { pipeBothWays } from "./_pipe.ts";
import { errorMessage } from "../_errors.ts";

export type { AgentEvent, AgentOptions } from "./agent_host.ts";
export type { KeptGuest } from "./kept_guests.ts";

/**
 * Most bytes of answers that may wait for one peer: a few of the largest
 * (a `guests` list). A control connection whose source does not read them
 * is closed, as is one that takes nothing for the idle timeout.
 */
const MAX_QUEUED_ANSWER_BYTES = 4 * MAX_CONTROL_BYTES;

/** What a guest stream's peer without the gang's key is told, whatever it sent. */
const KEY_REFUSAL = "Refused: wrong or missing key";

/**
 * What a connection to the agent is, as its events name it: "unknown"
 * until its first frame says.
 */
export type ConnectionKind = "unknown" | "control" | "RAM" | "device state" | "disk copy";

/** Options of {@linkcode serveAgent}. */
export interface ServeAgentOptions extends AgentOptions {
  /** Stops the agent (a gang under way is abandoned, as if its source died). */
  signal?: AbortSignal;
  /** Connections allowed before their first frame at once (see `acceptConnections`). Default 16. */
  maxPendingHandshakes?: number;
}

/**
 * Serves sources until `signal` aborts. First makes its directories that
 * are missing (mode 0700) and refuses any that another user owns or may
 * write (`checkAgentDirs`), then cleans up what an agent of the same run
 * directory left when it died during a gang.
 *
 * Requires `--allow-all` in practice: QEMU (`--allow-run`), the page
 * library (`--allow-ffi`), and files under /dev/shm and /run.
 *
 * @example
 * ```ts
 * import { serveAgent } from "./agent.ts";
 * import { listenForSenders } from "../transport/listen_for_senders.ts";
 *
 * declare const cert: string, key: string, token: string;
 * const listener = listenForSenders({ hostname: "0.0.0.0", port: 7100 }, { cert, key });
 * await serveAgent(listener, {
 *   dir: "/dev/shm/gangway",
 *   runDir: "/run/gangway-agent",
 *   token,
 *   maxGuests: 8,
 *   maxMemoryMiB: 16384,
 *   qemuBinary: "qemu-system-x86_64",
 *   handshakeTimeoutMs: 10_000,
 *   idleTimeoutMs: 60_000,
 * });
 * ```
 */
export async function serveAgent(
  listener: Deno.Listener,
  options: ServeAgentOptions,
): Promise<void> {
  await serveAgentHost(listener, new AgentHost(checkAgentDirs(options)), options);
}

/**
 * {@linkcode serveAgent} with a host the caller made and checked.
 *
 * @internal For tests, which look into the host's state.
 */
export async function serveAgentHost(
  listener: Deno.Listener,
  host: AgentHost,
  options: Pick<ServeAgentOptions, "signal" | "maxPendingHandshakes"> = {},
): Promise<void> {
  await host.kept.recoverLeftovers();
  const partials = await host.files.removePartials();
  if (partials > 0) host.log({ event: "recovered", partialFiles: partials });
  // What a gang may be here, said once: a source refused for its size can be told why at a glance.
  const { dir, maxGuests, maxMemoryMiB } = host.options;
  host.log({
    event: "listening",
    address: addressText(listener.addr),
    dir,
    maxGuests,
    maxMemory: `${maxMemoryMiB} MiB`,
    token: host.options.token === undefined ? "none (any peer that connects)" : "required",
  });
  const stop = () => {
    // Read as "stopping", or "stopping: gang abandoned" (its guests not yet moved stay at the source).
    host.log({ event: "stopping", ...(host.busy ? { gang: "abandoned" } : {}) });
    host.closeConnections();
  };
  options.signal?.addEventListener("abort", stop, { once: true });
  try {
    await acceptConnections(listener, (pending) => serveConnection(host, pending), {
      maxPendingHandshakes: options.maxPendingHandshakes,
      signal: options.signal,
      log: (event) => host.log(event),
    });
  } finally {
    options.signal?.removeEventListener("abort", stop);
    await host.close();
  }
}

/**
 * Looks at a connection's first frame, within the handshake timeout, and
 * hands the connection to its kind's handler once the peer has shown its
 * token or key.
 */
async function serveConnection(host: AgentHost, pending: PendingConnection): Promise<void> {
  const { conn, peer, signal } = pending;
  const channel = new FrameChannel(conn, {
    maxBody: MAX_BODY_BYTES,
    writeTimeoutMs: host.options.idleTimeoutMs,
    maxQueuedBytes: MAX_QUEUED_ANSWER_BYTES,
  });
  const endOnAbort = () => channel.close();
  signal.addEventListener("abort", endOnAbort, { once: true });
  host.track(channel);
  let kind: ConnectionKind = "unknown";
  // Until the peer shows its token or key, it is told one refusal whatever it sent (below).
  let authenticated = false;
  const seen: PendingConnection = {
    ...pending,
    handshakeDone: () => {
      authenticated = true;
      pending.handshakeDone();
    },
  };
  try {
    const timeoutMs = host.options.handshakeTimeoutMs;
    const head = await withTimeout(
      (async () => {
        if (isTls(conn)) await conn.handshake();
        return await channel.reader.peek(HEADER_BYTES, undefined, "a frame header");
      })(),
      timeoutMs,
      () => new TimeoutError(`No handshake within ${timeoutMs / 1000} s`),
    );
    if (!head) return;
    kind = connectionKind(head[0]!);
    if (head[0] === FrameType.Hello) return await serveRam(host, channel, seen);
    const first = await withTimeout(
      channel.reader.next(undefined, MAX_CONTROL_BYTES),
      timeoutMs,
      () => new TimeoutError(`No handshake within ${timeoutMs / 1000} s`),
    );
    switch (first?.type) {
      case FrameType.Control:
        return await serveControl(host, channel, seen, decodeJson(first.body, "The hello"));
      case FrameType.DeviceState:
      case FrameType.DiskCopy: {
        const hello = decodeJson(first.body, "The guest stream's hello");
        // What came with the hello is the stream's: read already, it is not on the connection.
        const extra = channel.reader.bytesRead - (HEADER_BYTES + first.body.length);
        const early = extra > 0 ? (await channel.reader.peek(extra))!.slice() : undefined;
        return await serveGuestStream(host, channel, seen, first.type, hello, early);
      }
      default:
        throw new ProtocolError(`Unexpected ${frameTypeName(first?.type ?? -1)} frame first`);
    }
  } catch (error) {
    if (host.stopping) {
      host.log({ event: "closed", connection: kind, peer, why: "the agent stops" });
      return;
    }
    host.log({ event: "failed", connection: kind, peer, error: errorMessage(error) });
    // The detail (a frame over a limit, say) is for the log: a peer without the token learns
    // nothing, as from `receive`. Only the time it has to show it, which it can count anyway.
    const told = authenticated || error instanceof TimeoutError
      ? error
      : kind === "device state" || kind === "disk copy"
      ? KEY_REFUSAL
      : TOKEN_REFUSAL;
    await refuse(channel, told);
  } finally {
    signal.removeEventListener("abort", endOnAbort);
    host.untrack(channel);
    channel.close();
  }
}

async function serveControl(
  host: AgentHost,
  channel: FrameChannel,
  pending: PendingConnection,
  hello: Record<string, unknown>,
): Promise<void> {
  const token = host.options.token;
  // The token first: an unauthenticated peer learns nothing, not even whether the agent is busy.
  if (hello.op !== "hello" || (token !== undefined && !sameText(hello.token, token))) {
    throw new ProtocolError(TOKEN_REFUSAL);
  }
  pending.handshakeDone();
  if (hello.version !== AGENT_VERSION) {
    throw new ProtocolError(
      `Refused: this agent speaks version ${AGENT_VERSION}, not ${hello.version}`,
    );
  }
  using _counted = host.openControl(pending.address);
  if (host.busy) throw new ProtocolError("Target agent is busy with another gang");
  await channel.write(encodeJson(FrameType.Control, {
    id: hello.id ?? 0,
    ok: true,
    version: AGENT_VERSION,
    maxGuests: host.options.maxGuests,
    maxMemoryMiB: host.options.maxMemoryMiB,
  }));
  host.log({ event: "source", connection: "control", peer: pending.peer });
  await new ControlSession(host, channel, pending.peer).run();
}

async function serveRam(
  host: AgentHost,
  channel: FrameChannel,
  pending: PendingConnection,
): Promise<void> {
  const gang = host.gang;
  // The gang's key is the token: without a prepared gang nothing matches it.
  const options: ReceiverOptions = {
    ...host.options.receiver,
    // The gang was prepared within the agent's own limit: the receiver's default (256) must not
    // refuse the RAM of a larger one it accepted.
    maxGuests: host.options.maxGuests,
    dir: host.options.dir,
    token: gang?.key ?? crypto.randomUUID(),
    expectedGuests: gang?.names.map((name) => ({ name, size: gang.ramBytes(name)! })) ?? [],
    log: (event) => host.log({ ...event, event: `ram-${event.event}`, connection: "RAM" }),
  };
  const sender = await readSenderHandshake(channel.conn, options, pending.signal, channel.reader);
  // It showed the gang's key: it may be told why it is refused.
  pending.handshakeDone();
  if (!gang || host.gang !== gang) throw new ProtocolError("Gang refused: the gang is over");
  using _open = gang.openRam();
  using _adopted = gang.adopt(channel);
  await receiveAuthenticatedGang(sender, options);
}

/**
 * A stream of one guest of the gang, carried between the source and a unix
 * socket of its destination: its device state (into the destination's
 * migration socket), or NBD to one of its copied disks (to the
 * destination's NBD server, which exports only that guest's copied disks).
 * `early` is what the source sent right after its hello, before the
 * agent's answer: the stream's first bytes.
 */
async function serveGuestStream(
  host: AgentHost,
  channel: FrameChannel,
  pending: PendingConnection,
  type: typeof FrameType.DeviceState | typeof FrameType.DiskCopy,
  hello: Record<string, unknown>,
  early?: Uint8Array,
): Promise<void> {
  const gang = host.gang;
  if (!gang || !sameText(hello.key, gang.key)) {
    throw new ProtocolError(KEY_REFUSAL);
  }
  pending.handshakeDone();
  const destination = gang.get(hello.guest);
  const { guest } = destination;
  // A disk's connection replaces the one before instead (below): NBD serves the next one.
  using _open = type === FrameType.DeviceState ? gang.openDeviceState(destination) : undefined;
  let path = destination.incomingPath;
  const disk = hello.disk as number;
  if (type === FrameType.DiskCopy) {
    if (!destination.copiedDisks.includes(disk)) {
      throw new ProtocolError(
        `Refused: guest "${guest.name}" has no copied disk ${
          String(JSON.stringify(hello.disk)).slice(0, 40)
        }`,
      );
    }
    if (!destination.nbdPath) throw copiesEnded(guest.name);
    path = destination.nbdPath;
  }
  // Its checks passed: closed with the gang from now on, forgotten when it ends (one refused
  // above never was the gang's, and must not stay with its buffers until the gang ends).
  using _adopted = gang.adopt(channel);
  const local = await connectUnix(path, guest.name);
  if (type === FrameType.DiskCopy) {
    if (!destination.nbdPath) {
      // The exports ended while it connected: it would outlive them.
      local.close();
      throw copiesEnded(guest.name);
    }
    // One writer per disk: a source that connects again (its first connection half-open, say)
    // replaces the one before, which could otherwise write into the copy behind its back.
    destination.nbdConns.get(disk)?.close();
    destination.nbdConns.set(disk, local);
  }
  host.log({
    event: type === FrameType.DiskCopy ? "disk-copy" : "device-state",
    connection: connectionKind(type),
    peer: pending.peer,
    guest: guest.name,
    ...type === FrameType.DiskCopy ? { disk: hello.disk } : {},
  });
  try {
    await channel.write(encodeJson(type, { ok: true }));
    await pipeBothWays(channel.conn, local, early);
  } finally {
    if (destination.nbdConns.get(disk) === local) destination.nbdConns.delete(disk);
    closeQuietly(local); // closed already (the disk copy ended)
  }
}

function copiesEnded(guest: string): ProtocolError {
  return new ProtocolError(`Refused: the disk copies of guest "${guest}" have ended`);
}

/** The kind of a connection whose first frame has this type. */
function connectionKind(type: number): ConnectionKind {
  switch (type) {
    case FrameType.Control:
      return "control";
    case FrameType.Hello:
      return "RAM";
    case FrameType.DeviceState:
      return "device state";
    case FrameType.DiskCopy:
      return "disk copy";
    default:
      return "unknown";
  }
}

/** Tells the peer why it is refused, if it can still be told. */
async function refuse(channel: FrameChannel, error: unknown): Promise<void> {
  await withTimeout(
    channel.write(encodeText(FrameType.Error, errorMessage(error))),
    2_000,
    () => new Error("no answer"),
  ).catch(() => {});
}

/** A secret given over the network, compared with the expected one in constant time. */
function sameText(given: unknown, expected: string): boolean {
  const encoder = new TextEncoder();
  return sameSecret(
    encoder.encode(typeof given === "string" ? given : ""),
    encoder.encode(expected),
  );
}

function isTls(conn: Deno.Conn): conn is Deno.TlsConn {
  return typeof (conn as Partial<Deno.TlsConn>).handshake === "function";
}
