/**
 * The target side of a gang migration: accepts one gang per connection,
 * writes each guest's RAM to `DIR/<guest-name>` in place (zero pages stay
 * holes), resolves references from contents it already holds, checks every
 * page against its hash, and reports a guest complete only once the
 * digest of its whole RAM matches the source's.
 *
 * A bad peer costs only its own connection: every frame is checked before
 * use and every failure ends that session with an ERROR to the peer.
 *
 * @module
 */
import { join } from "node:path";
import { hashPages, ramDigest, zeroPageHash } from "../native/hashing.ts";
import { gatherPages, PAGE_SIZE, RamFile } from "../native/ram_file.ts";
import { FrameReader } from "./frame_io.ts";
import {
  badGuestName,
  decodeDone,
  decodeHello,
  decodePages,
  decodePairs,
  decodeRoundEnd,
  encodeText,
  encodeU32,
  type Frame,
  FrameType,
  frameTypeName,
  type Hello,
  ProtocolError,
} from "./protocol.ts";
import { NONE, TargetContents, ZERO } from "./target_contents.ts";

/** Options of {@linkcode receiveGang} and {@linkcode serveGangs}. */
export interface ReceiverOptions {
  /** Directory the guests' RAM files are written to (must exist). */
  dir: string;
  /** Largest guest accepted, in bytes. Default 64 GiB. */
  maxGuestBytes?: number;
  /** Most guests in one gang. Default 256. */
  maxGuests?: number;
  /** Shared secret a sender must present; none when unset. */
  token?: string;
  /** Longest wait for the sender's HELLO. Default 10 s. */
  handshakeTimeoutMs?: number;
  /** Longest silence of a sender during a migration. Default 60 s. */
  idleTimeoutMs?: number;
  /** Receives a line for each event worth a log. */
  log?: (event: ReceiverEvent) => void;
}

/** Something the receiver did, for its log. */
export type ReceiverEvent =
  | { event: "listening"; address: string }
  | { event: "accepted"; peer: string; guests: { name: string; bytes: number }[] }
  | { event: "round"; peer: string; round: number; final: boolean }
  | {
    event: "complete";
    peer: string;
    guests: { name: string; path: string; digest: string }[];
    bytesRead: number;
    seconds: number;
  }
  | { event: "failed"; peer: string; error: string };

/** A gang received and verified. */
export interface ReceivedGang {
  guests: { name: string; path: string; bytes: number; digest: string }[];
  rounds: number;
  bytesRead: number;
  seconds: number;
}

/** Refs resolved per batch of reads before writes. */
const REF_BATCH = 256;

/** One sender's session: the gang's files and what they hold. */
class Session {
  readonly hello: Hello;
  readonly files: RamFile[];
  readonly target: TargetContents;
  readonly zeroHash: bigint;
  round = 0;
  // Per global page: the batch in which a pending write targets it (to never read a page before its write lands).
  #writtenInBatch: Uint32Array;
  #batch = 1;

  constructor(hello: Hello, files: RamFile[]) {
    this.hello = hello;
    this.files = files;
    this.target = new TargetContents(files.map((f) => f.pages));
    this.zeroHash = zeroPageHash(hello.seed);
    this.#writtenInBatch = new Uint32Array(this.target.bases.at(-1)! + this.target.pages.at(-1)!);
  }

  #file(frame: Frame): RamFile {
    const file = this.files[frame.guest];
    if (!file) {
      throw new ProtocolError(
        `${frameTypeName(frame.type)} frame for guest ${frame.guest}, which the gang does not have`,
      );
    }
    return file;
  }

  #checkPage(frame: Frame, page: number): number {
    if (page >= this.target.pages[frame.guest]!) {
      throw new ProtocolError(
        `${frameTypeName(frame.type)} frame points at page ${page} of guest "${
          this.hello.guests[frame.guest]!.name
        }", which has ${this.target.pages[frame.guest]} pages`,
      );
    }
    return this.target.bases[frame.guest]! + page;
  }

  /** Pages in full: hash-checked, registered as new contents, written. */
  applyPages(frame: Frame): void {
    const file = this.#file(frame);
    const { pages, ids, hashes, data } = decodePages(frame.body);
    const actual = hashPages(data, pages.length, this.hello.seed).hashes;
    for (let i = 0; i < pages.length; i++) {
      const x = this.#checkPage(frame, pages[i]!);
      if (actual[i] !== hashes[i]) {
        throw new ProtocolError(
          `Page ${pages[i]} of guest "${file.path}" does not match its hash: corrupted in transit`,
        );
      }
      if (ids[i] !== this.target.contents) {
        throw new ProtocolError(
          `Pages frame brings content id ${ids[i]}, expected ${this.target.contents}`,
        );
      }
      this.target.assign(x, this.target.addContent(hashes[i]!));
    }
    file.write(pages, data);
  }

  /** References: copied from a page holding the content, hash-checked, written. */
  applyRefs(frame: Frame): void {
    const file = this.#file(frame);
    const { a: pages, b: ids } = decodePairs(frame.body, "Refs");
    const batch = {
      pages: [] as number[],
      sources: [] as RamFile[],
      sourcePages: [] as number[],
      ids: [] as number[],
    };
    for (let i = 0; i < pages.length; i++) {
      const x = this.#checkPage(frame, pages[i]!);
      const id = ids[i]!;
      const holder = this.target.holder(id);
      if (holder === NONE) {
        throw new ProtocolError(`Reference to content ${id}, which no page of the target holds`);
      }
      if (this.#writtenInBatch[holder] === this.#batch || batch.pages.length === REF_BATCH) {
        this.#copy(file, batch);
      }
      const source = this.target.locate(holder);
      batch.pages.push(pages[i]!);
      batch.sources.push(this.files[source.guest]!);
      batch.sourcePages.push(source.page);
      batch.ids.push(id);
      this.#writtenInBatch[x] = this.#batch;
      this.target.assign(x, id);
    }
    this.#copy(file, batch);
  }

  /** Reads a batch of referenced pages, checks them, writes them, and starts a new batch. */
  #copy(
    file: RamFile,
    batch: { pages: number[]; sources: RamFile[]; sourcePages: number[]; ids: number[] },
  ) {
    const n = batch.pages.length;
    if (n > 0) {
      const buf = new Uint8Array(n * PAGE_SIZE);
      gatherPages(batch.sources, Uint32Array.from(batch.sourcePages), buf);
      const actual = hashPages(buf, n, this.hello.seed).hashes;
      for (let i = 0; i < n; i++) {
        if (actual[i] !== this.target.hashOf(batch.ids[i]!)) {
          throw new Error(
            `Content ${batch.ids[i]} read back from "${
              batch.sources[i]!.path
            }" does not match its hash`,
          );
        }
      }
      file.write(Uint32Array.from(batch.pages), buf);
    }
    batch.pages.length =
      batch.sources.length =
      batch.sourcePages.length =
      batch.ids.length =
        0;
    this.#batch++;
  }

  /** Pages that became zero: holes again. */
  applyZeros(frame: Frame): void {
    const file = this.#file(frame);
    const { a: firsts, b: counts } = decodePairs(frame.body, "Zeros");
    for (let i = 0; i < firsts.length; i++) {
      const first = firsts[i]!;
      const count = counts[i]!;
      if (count === 0) throw new ProtocolError("Zeros frame with an empty run");
      this.#checkPage(frame, first + count - 1);
      const base = this.target.bases[frame.guest]! + first;
      for (let p = 0; p < count; p++) this.target.zero(base + p);
      file.punch(first, count);
    }
  }

  /** The digest of each guest as this target holds it. */
  digests(): string[] {
    return this.files.map((file, guest) => {
      const base = this.target.bases[guest]!;
      const hashes = new BigUint64Array(file.pages);
      for (let p = 0; p < file.pages; p++) {
        const content = this.target.contentAt(base + p);
        hashes[p] = content === ZERO ? this.zeroHash : this.target.hashOf(content);
      }
      return ramDigest(hashes, this.hello.seed);
    });
  }
}

/** Checks a HELLO against the limits; returns why it is refused, or undefined. */
function refusal(hello: Hello, options: ReceiverOptions): string | undefined {
  const maxGuests = options.maxGuests ?? 256;
  const maxBytes = options.maxGuestBytes ?? 64 * 2 ** 30;
  if (options.token !== undefined && hello.token !== options.token) return "wrong or missing token";
  if (hello.pageSize !== PAGE_SIZE) return `page size ${hello.pageSize} is not ${PAGE_SIZE}`;
  if (hello.guests.length === 0) return "the gang has no guests";
  if (hello.guests.length > maxGuests) {
    return `${hello.guests.length} guests exceed the limit of ${maxGuests}`;
  }
  const names = new Set<string>();
  for (const { name, size } of hello.guests) {
    const bad = badGuestName(name);
    if (bad) return `guest name ${JSON.stringify(name)} is refused: ${bad}`;
    if (names.has(name)) return `two guests are named "${name}"`;
    names.add(name);
    if (size <= 0) return `guest "${name}" has no RAM`;
    if (size > maxBytes) return `guest "${name}" has ${size} bytes, over the limit of ${maxBytes}`;
  }
  return undefined;
}

/**
 * Opens (or creates) each guest's RAM file at its declared size and makes
 * it all zero: a stale file must not leak old pages into the new guest.
 * Files it had to create are listed in `created`, for removal on failure.
 */
function openTargetFiles(hello: Hello, dir: string, created: string[]): RamFile[] {
  const files: RamFile[] = [];
  try {
    for (const { name, size } of hello.guests) {
      const path = join(dir, name);
      const file = RamFile.open(path, { create: true });
      files.push(file);
      if (file.size === 0) {
        created.push(path);
        file.resize(size);
      } else if (file.size !== size) {
        throw new Error(
          `Cannot receive guest "${name}": "${path}" exists with ${file.size} bytes, not ${size}`,
        );
      }
      file.punch(0, file.pages);
    }
    return files;
  } catch (error) {
    for (const file of files) file.close();
    throw error;
  }
}

/**
 * Receives one gang over an accepted connection: handshake, rounds,
 * verification. Sends an ERROR to the peer and throws on any failure;
 * files it created are removed then.
 *
 * Requires `--allow-ffi` (and `--allow-write` to remove files on failure).
 */
export async function receiveGang(
  conn: Deno.Conn,
  options: ReceiverOptions,
): Promise<ReceivedGang> {
  const peer = peerName(conn);
  const started = performance.now();
  const reader = new FrameReader(conn);
  const created: string[] = [];
  let session: Session | undefined;
  try {
    const first = await reader.next(options.handshakeTimeoutMs ?? 10_000);
    if (!first) throw new ProtocolError("Connection closed before the handshake");
    if (first.type !== FrameType.Hello) {
      throw new ProtocolError(`Expected a Hello frame, got ${frameTypeName(first.type)}`);
    }
    const hello = decodeHello(first.body);
    const refused = refusal(hello, options);
    if (refused) throw new ProtocolError(`Gang refused: ${refused}`);
    session = new Session(hello, openTargetFiles(hello, options.dir, created));
    options.log?.({
      event: "accepted",
      peer,
      guests: hello.guests.map((g) => ({ name: g.name, bytes: g.size })),
    });
    await conn.write(encodeU32(FrameType.Welcome, hello.version));

    const digests = await receiveFrames(session, reader, conn, peer, options);
    const guests = hello.guests.map((g, i) => ({
      name: g.name,
      path: join(options.dir, g.name),
      bytes: g.size,
      digest: digests[i]!,
    }));
    const seconds = (performance.now() - started) / 1000;
    options.log?.({ event: "complete", peer, guests, bytesRead: reader.bytesRead, seconds });
    return { guests, rounds: session.round, bytesRead: reader.bytesRead, seconds };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    options.log?.({ event: "failed", peer, error: message });
    await conn.write(encodeText(FrameType.Error, message)).catch(() => {});
    for (const file of session?.files ?? []) file.close();
    for (const path of created) await Deno.remove(path).catch(() => {});
    throw error;
  } finally {
    for (const file of session?.files ?? []) file.close();
    try {
      conn.close();
    } catch {
      // Closed by the peer already.
    }
  }
}

/** Applies frames until DONE; returns the verified digests. */
async function receiveFrames(
  session: Session,
  reader: FrameReader,
  conn: Deno.Conn,
  peer: string,
  options: ReceiverOptions,
): Promise<string[]> {
  const idle = options.idleTimeoutMs ?? 60_000;
  for (;;) {
    const frame = await reader.next(idle);
    if (!frame) {
      throw new ProtocolError("Sender closed the connection before the migration was done");
    }
    switch (frame.type) {
      case FrameType.Pages:
        session.applyPages(frame);
        break;
      case FrameType.Refs:
        session.applyRefs(frame);
        break;
      case FrameType.Zeros:
        session.applyZeros(frame);
        break;
      case FrameType.RoundEnd: {
        const { round, final } = decodeRoundEnd(frame.body);
        if (round !== session.round + 1) {
          throw new ProtocolError(`Round ${round} ended, expected round ${session.round + 1}`);
        }
        session.round = round;
        options.log?.({ event: "round", peer, round, final });
        await conn.write(encodeU32(FrameType.RoundDone, round));
        break;
      }
      case FrameType.Done: {
        const expected = decodeDone(frame.body, session.files.length);
        const actual = session.digests();
        const bad = session.hello.guests.filter((_, i) => actual[i] !== expected[i]).map((g) =>
          `"${g.name}"`
        );
        if (bad.length > 0) {
          throw new Error(
            `Digest mismatch for guest ${bad.join(", ")}: the copy differs from the source`,
          );
        }
        await conn.write(encodeU32(FrameType.Verified, session.files.length));
        return actual;
      }
      case FrameType.Error:
        throw new ProtocolError(`Sender gave up: ${new TextDecoder().decode(frame.body)}`);
      default:
        throw new ProtocolError(`Unexpected ${frameTypeName(frame.type)} frame`);
    }
  }
}

function peerName(conn: Deno.Conn): string {
  const addr = conn.remoteAddr;
  return addr.transport === "tcp" || addr.transport === "udp"
    ? `${addr.hostname}:${addr.port}`
    : addr.transport;
}

/** Options of {@linkcode serveGangs}. */
export interface ServeOptions extends ReceiverOptions {
  /** Stop after the first gang received completely. */
  once?: boolean;
  /** Stops the server. */
  signal?: AbortSignal;
}

/**
 * Accepts senders one gang at a time (a second sender while one is active
 * is refused). A failed session is logged and the server goes on.
 *
 * Requires `--allow-net`, `--allow-ffi`, `--allow-write`.
 *
 * @returns the gangs received (only the first with `once`)
 */
export async function serveGangs(
  listener: Deno.Listener,
  options: ServeOptions,
): Promise<ReceivedGang[]> {
  const received: ReceivedGang[] = [];
  let active: Promise<void> | undefined;
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  options.signal?.addEventListener("abort", () => done(), { once: true });
  const acceptLoop = (async () => {
    for await (const conn of listener) {
      if (active) {
        await conn.write(encodeText(FrameType.Error, "Target is busy with another gang")).catch(
          () => {},
        );
        conn.close();
        continue;
      }
      active = receiveGang(conn, options).then(
        (gang) => {
          received.push(gang);
          if (options.once) done();
        },
        () => {}, // logged by receiveGang; the server goes on
      ).finally(() => (active = undefined));
    }
  })().catch(() => {});
  await finished;
  listener.close();
  await acceptLoop;
  await active;
  return received;
}
