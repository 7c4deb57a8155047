/**
 * A server's accept loop, hardened against peers that connect and say
 * nothing, and against running out of file descriptors. The receiver
 * (`serveGangs`) uses it; any server whose peers must authenticate first
 * can use it with its own connection handler.
 *
 * **Pending handshakes.** A connection holds a handshake slot from accept
 * until its handler calls `handshakeDone()` (the peer has authenticated)
 * or it ends. Slots are bounded in total and per peer address. When a new
 * connection finds no free slot, the oldest pending handshake gives up its
 * slot: of the new peer's own address when that address holds its share,
 * else of the address that holds the most. A real sender finishes its
 * handshake in a round trip or two, long before it becomes the oldest, so
 * silent peers, however many and however fast, can push out only each
 * other (and from one address, only their own address's share).
 *
 * OpenSSH's MaxStartups drops new unauthenticated connections at random
 * as the count rises instead; that bounds the server's work, but refuses
 * a real sender with the same odds as a silent one, for as long as the
 * flood lasts. Here each pending handshake costs a 64 KiB buffer and a
 * timer, so evicting the oldest keeps the guarantee at no risk.
 *
 * **Descriptors.** When accept fails (EMFILE: out of file descriptors,
 * ENFILE, ENOBUFS), the loop logs it, waits (10 ms, doubling to 1 s) and
 * tries again: the connection waits in the kernel's backlog until
 * descriptors are free again.
 *
 * @module
 */
import { closeQuietly } from "../_close_quietly.ts";
import { addressGroup } from "../_address_group.ts";
import { delay } from "../_delay.ts";
import { errorMessage } from "../_errors.ts";
import { setListenerNoDelay } from "../native/listener_nodelay.ts";

/** Something the accept loop did, for a log. */
export type AcceptEvent =
  | { event: "failed"; peer: string; error: string }
  | { event: "accept-failed"; error: string; retryInMs: number };

/** Options of {@linkcode acceptConnections}. */
export interface AcceptOptions {
  /** Connections in their handshake at once, over all addresses. Default 16. */
  maxPendingHandshakes?: number;
  /** Connections in their handshake at once from one address. Default 8. */
  maxPendingPerAddress?: number;
  /** Stops the loop: the listener is closed and pending handshakes are given up. */
  signal?: AbortSignal;
  /** Receives each event worth a log. */
  log?: (event: AcceptEvent) => void;
}

/** An accepted connection, as its handler gets it. */
export interface PendingConnection {
  conn: Deno.Conn;
  /** "host:port" of the peer, for messages. */
  peer: string;
  /** The group of the peer's address (`addressGroup`): what bounds per address count. */
  address: string;
  /** Frees the handshake slot: call it once the peer has authenticated. */
  handshakeDone(): void;
  /**
   * Aborts, with the reason as an Error, when the slot is taken back (a
   * newer connection needed it, or the server stops) before
   * `handshakeDone()`: the handler must then end the connection.
   */
  signal: AbortSignal;
}

/** Serves one accepted connection; its rejection is ignored (the handler logs its own failures). */
export type ConnectionHandler = (connection: PendingConnection) => Promise<void>;

/** Default bounds of {@linkcode acceptConnections}. */
export const ACCEPT_DEFAULTS = { maxPendingHandshakes: 16, maxPendingPerAddress: 8 } as const;

const FIRST_BACKOFF_MS = 10;
const LAST_BACKOFF_MS = 1000;

/** "host:port" of a connection's peer (see {@linkcode addressText}). */
export function peerName(conn: Deno.Conn): string {
  return addressText(conn.remoteAddr);
}

/**
 * "host:port" of an address, an IPv6 host in brackets ("[::1]:7000"), as
 * `--listen` and `--target` take it; the transport's name for any other.
 */
export function addressText(addr: Deno.Addr): string {
  if (addr.transport !== "tcp" && addr.transport !== "udp") return addr.transport;
  return addr.hostname.includes(":")
    ? `[${addr.hostname}]:${addr.port}`
    : `${addr.hostname}:${addr.port}`;
}

/** The group of addresses a peer's share of the slots is counted in (see `addressGroup`). */
function addressOf(conn: Deno.Conn): string {
  const addr = conn.remoteAddr;
  return addr.transport === "tcp" || addr.transport === "udp"
    ? addressGroup(addr.hostname)
    : addr.transport;
}

interface Slot {
  address: string;
  abort: AbortController;
}

/**
 * Accepts connections until the listener closes or `signal` aborts, and
 * hands each to `onConnection`, at most `maxPendingHandshakes` of them in
 * their handshake at once (see the module doc for who gives way). Resolves
 * once the loop has stopped and every handler has ended.
 *
 * Requires `--allow-net`.
 *
 * @example
 * ```ts
 * import { acceptConnections } from "./accept_connections.ts";
 * import { listenForSenders } from "../transport/listen_for_senders.ts";
 *
 * declare const cert: string, key: string;
 * // The server's own protocol: its handshake, then the rest.
 * declare function readMyHello(conn: Deno.Conn, signal: AbortSignal): Promise<string>;
 * declare function serveMyPeer(conn: Deno.Conn, hello: string): Promise<void>;
 *
 * const listener = listenForSenders({ hostname: "0.0.0.0", port: 7000 }, { cert, key });
 * await acceptConnections(listener, async ({ conn, handshakeDone, signal }) => {
 *   const hello = await readMyHello(conn, signal); // ends conn when signal aborts
 *   handshakeDone();
 *   await serveMyPeer(conn, hello);
 * });
 * ```
 */
export async function acceptConnections(
  listener: Deno.Listener,
  onConnection: ConnectionHandler,
  options: AcceptOptions = {},
): Promise<void> {
  const maxPending = options.maxPendingHandshakes ?? ACCEPT_DEFAULTS.maxPendingHandshakes;
  const perAddress = Math.min(
    options.maxPendingPerAddress ?? ACCEPT_DEFAULTS.maxPendingPerAddress,
    maxPending,
  );
  // Answers go out as written, a TLS listener's too (see src/native/listener_nodelay.ts). Best
  // effort: without /proc, or with no descriptor left, the server runs as it would have.
  if (listener.addr.transport === "tcp") {
    try {
      setListenerNoDelay(listener.addr.port);
    } catch {
      // Only the first answer after a TLS handshake is slower.
    }
  }
  const pending = new Map<Deno.Conn, Slot>(); // in order of arrival: oldest first
  const tasks = new Set<Promise<void>>();
  const stop = new AbortController();
  const onAbort = () => {
    stop.abort();
    closeQuietly(listener);
  };
  if (options.signal?.aborted) onAbort();
  options.signal?.addEventListener("abort", onAbort, { once: true });

  const countOf = (address: string) => {
    let n = 0;
    for (const slot of pending.values()) if (slot.address === address) n++;
    return n;
  };
  const evictOldest = (address: string, why: string) => {
    for (const [conn, slot] of pending) {
      if (slot.address !== address) continue;
      pending.delete(conn);
      slot.abort.abort(new Error(why));
      return;
    }
  };
  /** Frees a slot for a connection from `address`, if none is free. */
  const makeRoom = (address: string) => {
    if (countOf(address) >= perAddress) {
      evictOldest(address, `Handshake given up: newer connections from ${address} needed the slot`);
      return;
    }
    if (pending.size < maxPending) return;
    const counts = new Map<string, number>();
    for (const slot of pending.values()) {
      counts.set(slot.address, (counts.get(slot.address) ?? 0) + 1);
    }
    const most = Math.max(...counts.values());
    const busiest = [...pending.values()].find((slot) => counts.get(slot.address) === most)!;
    evictOldest(
      busiest.address,
      `Handshake given up: too many connections in their handshake (limit ${maxPending})`,
    );
  };

  let backoff = 0;
  while (!stop.signal.aborted) {
    let conn: Deno.Conn;
    try {
      conn = await listener.accept();
    } catch (error) {
      if (
        stop.signal.aborted || error instanceof Deno.errors.BadResource ||
        error instanceof Deno.errors.Interrupted
      ) break; // the listener was closed
      backoff = Math.min(backoff === 0 ? FIRST_BACKOFF_MS : backoff * 2, LAST_BACKOFF_MS);
      options.log?.({
        event: "accept-failed",
        error: `Cannot accept a connection: ${errorMessage(error)}`,
        retryInMs: backoff,
      });
      await delay(backoff, stop.signal).catch(() => {});
      continue;
    }
    backoff = 0;
    const address = addressOf(conn);
    makeRoom(address);
    const slot = { address, abort: new AbortController() };
    pending.set(conn, slot);
    const task = onConnection({
      conn,
      peer: peerName(conn),
      address,
      handshakeDone: () => pending.delete(conn),
      signal: slot.abort.signal,
    }).catch(() => {}).finally(() => {
      pending.delete(conn);
      tasks.delete(task);
    });
    tasks.add(task);
  }
  options.signal?.removeEventListener("abort", onAbort);
  for (const [conn, slot] of pending) {
    pending.delete(conn);
    slot.abort.abort(new Error("Target is shutting down"));
  }
  await Promise.all(tasks);
}
