/**
 * A TCP proxy between a sender and a receiver that injects faults into
 * the first connection through it: a cut link (connection reset), a
 * stalled link (no byte moves either way), a byte flipped in the first
 * PAGES frame's page data (plain gangway only), or a byte flipped at an
 * offset of the stream (any stream, TLS included). Later connections pass
 * unharmed.
 *
 * @module
 */
import { closeQuietly } from "../src/_close_quietly.ts";
import { FrameType, HEADER_BYTES } from "../src/transfer/protocol.ts";
import { pagesDataOffset } from "../src/transfer/page_frames.ts";

/** A running proxy. */
export interface FaultProxy extends AsyncDisposable {
  /** The port senders connect to. */
  port: number;
  /** Bytes forwarded from the sender to the target on the first connection. */
  readonly forwarded: number;
  /** Resets the first connection on both sides now. */
  cut(): void;
  /** Stops moving bytes on the first connection, both ways, keeping it open. */
  stall(): void;
  /** Whether a corruption was applied. */
  readonly corrupted: boolean;
}

/** Options of {@linkcode startFaultProxy}. */
export interface FaultProxyOptions {
  /** Flip a byte in the page data of the first PAGES frame (the stream must be plain gangway). */
  corruptFirstPage?: boolean;
  /** Flip the byte at this offset of the sender's stream (works under TLS too). */
  flipByteAt?: number;
}

/** Finds the first PAGES frame in a plain gangway stream and flips a byte of its first page. */
class PagesCorruptor {
  #frameStart = 0;
  #head = new Uint8Array(HEADER_BYTES + 4);
  #got = 0;
  #flipAt = -1;
  done = false;

  /** Looks at the next chunk of the stream (starting at stream offset `offset`); may change it. */
  apply(chunk: Uint8Array, offset: number): void {
    let i = 0;
    while (i < chunk.length && !this.done) {
      if (this.#flipAt >= 0) {
        if (this.#flipAt < offset + chunk.length) {
          chunk[this.#flipAt - offset]! ^= 0xff;
          this.done = true;
        }
        return;
      }
      if (offset + i < this.#frameStart) {
        i = this.#frameStart - offset;
        continue;
      }
      this.#head[this.#got++] = chunk[i++]!;
      const view = new DataView(this.#head.buffer);
      if (this.#got === HEADER_BYTES && view.getUint8(0) !== FrameType.Pages) {
        this.#frameStart += HEADER_BYTES + view.getUint32(4, true);
        this.#got = 0;
      } else if (this.#got === HEADER_BYTES + 4) {
        const pages = view.getUint32(HEADER_BYTES, true);
        // A byte inside the first page's data, after the header, the head and the entries.
        this.#flipAt = this.#frameStart + HEADER_BYTES + pagesDataOffset(pages) + 1000;
      }
    }
  }
}

/**
 * Starts a proxy on a free loopback port in front of `target`.
 *
 * Requires `--allow-net`.
 */
export function startFaultProxy(
  target: { hostname: string; port: number },
  options: FaultProxyOptions = {},
): FaultProxy {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const pumps = new Set<Promise<void>>();
  let first: { client: Deno.Conn; server: Deno.Conn } | undefined;
  let forwarded = 0;
  let stalled = false;
  let corrupted = false;
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));

  const pump = async (
    from: Deno.Conn,
    to: Deno.Conn,
    faulty: boolean,
    upstream: boolean,
  ) => {
    const buf = new Uint8Array(65536);
    const corruptor = faulty && upstream && options.corruptFirstPage
      ? new PagesCorruptor()
      : undefined;
    let offset = 0;
    try {
      for (;;) {
        if (faulty && stalled) {
          await released;
          return;
        }
        const n = await from.read(buf);
        if (n === null) break;
        if (faulty && stalled) {
          await released; // the bytes read are held back, as a dead link would
          return;
        }
        const chunk = buf.subarray(0, n);
        corruptor?.apply(chunk, offset);
        if (corruptor?.done) corrupted = true;
        const flip = faulty && upstream ? options.flipByteAt : undefined;
        if (flip !== undefined && flip >= offset && flip < offset + n) {
          chunk[flip - offset]! ^= 0xff;
          corrupted = true;
        }
        offset += n;
        if (faulty && upstream) forwarded += n;
        for (let done = 0; done < n;) done += await to.write(chunk.subarray(done));
      }
      await to.closeWrite().catch(() => {});
    } catch {
      closeQuietly(to);
      closeQuietly(from);
    }
  };

  const accepting = (async () => {
    for await (const client of listener) {
      let server: Deno.Conn;
      try {
        server = await Deno.connect(target);
      } catch {
        closeQuietly(client);
        continue;
      }
      conns.add(client);
      conns.add(server);
      const faulty = first === undefined;
      if (faulty) first = { client, server };
      for (const p of [pump(client, server, faulty, true), pump(server, client, faulty, false)]) {
        pumps.add(p);
        p.finally(() => pumps.delete(p));
      }
    }
  })().catch(() => {});

  return {
    port: (listener.addr as Deno.NetAddr).port,
    get forwarded() {
      return forwarded;
    },
    get corrupted() {
      return corrupted;
    },
    cut() {
      if (!first) return;
      // Stop reading first, so that unread bytes make the kernel send a reset, not a FIN.
      stalled = true;
      setTimeout(() => {
        closeQuietly(first!.client);
        closeQuietly(first!.server);
      }, 100);
    },
    stall() {
      stalled = true;
    },
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepting;
      for (const conn of conns) closeQuietly(conn);
      release();
      await Promise.all(pumps);
    },
  };
}
