/**
 * The fuzzer: seeded, reproducible runs against the frame decoders, the
 * frame reader, live receiver sessions (mutated recordings of a real
 * migration, and HELLOs with hostile guest names and sizes) and the scan
 * CLI (hostile file names, sizes and kinds). Each target checks that
 * nothing crashes, nothing hangs and every failure is a clear error; the
 * receiver targets also check that a gang completes only when it is
 * exactly the source, and that a failed gang leaves no file behind.
 *
 * Run by tests/fuzz_test.ts (a few hundred iterations) and by
 * `deno task fuzz` (bench/fuzz.ts: as many as asked for).
 *
 * @module
 */
import { join } from "node:path";
import { Gang } from "../src/scan/gang.ts";
import { GangSender } from "../src/transfer/sender.ts";
import { ConnectionError, FrameReader, TimeoutError } from "../src/transfer/frame_io.ts";
import {
  decodeRoundEnd,
  decodeU32,
  FrameFlag,
  FrameType,
  HEADER_BYTES,
  PROTOCOL_VERSION,
  ProtocolError,
  readHeader,
} from "../src/transfer/protocol.ts";
import { decodeDone } from "../src/transfer/digests.ts";
import { decodeHello, encodeHello } from "../src/transfer/hello_frame.ts";
import { decodeDeltas, decodePages, decodePairs } from "../src/transfer/page_frames.ts";
import { receiveGang, type ReceiverOptions } from "../src/transfer/receiver.ts";
import { PAGE_SIZE, RamFile } from "../src/native/ram_file.ts";
import { makeRamFile, patternPage, readRamFile, removeFiles, shmPath } from "./_fixtures.ts";

// ---------------------------------------------------------------------------
// Randomness and bookkeeping

/** A small seeded generator (SplitMix32): the same seed gives the same run. */
export class Rng {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    this.#state = (this.#state + 0x9e3779b9) >>> 0;
    let z = this.#state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return n <= 0 ? 0 : Math.floor((this.u32() / 2 ** 32) * n);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.u32() / 2 ** 32 < p;
  }

  /** One element of a list. */
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }

  /** n random bytes. */
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }
}

/** The generator of one iteration: a run can be replayed from any iteration. */
export function iterationRng(seed: number, iteration: number): Rng {
  return new Rng(Math.imul(seed ^ 0x5bd1e995, 0x27d4eb2d) ^ Math.imul(iteration + 1, 0x165667b1));
}

/** A broken invariant, with what it takes to reproduce it. */
export class FuzzFailure extends Error {
  constructor(target: string, seed: number, iteration: number, what: string) {
    super(
      `Fuzz target "${target}" failed at seed ${seed}, iteration ${iteration}: ${what}\n` +
        `reproduce: deno task fuzz -- --target ${target} --seed ${seed} --from ${iteration} --iterations 1`,
    );
    this.name = "FuzzFailure";
  }
}

/** What a target saw: iterations, and how many times each kind of outcome. */
export interface FuzzStats {
  target: string;
  iterations: number;
  outcomes: Record<string, number>;
  seconds: number;
}

/** Which fuzz run: a seed, the first iteration and how many. */
export interface FuzzRun {
  seed: number;
  from?: number;
  iterations: number;
}

/** An outcome in a few words: error class and message with numbers and quotes folded. */
function outcomeOf(error: unknown): string {
  if (!(error instanceof Error)) return `non-Error ${String(error)}`;
  const words = error.message.replace(/"[^"]*"/g, '""').replace(/\d+/g, "N").slice(0, 60);
  return `${error.name}: ${words}`;
}

async function runTarget(
  target: string,
  run: FuzzRun,
  iteration: (rng: Rng, fail: (what: string) => never, i: number) => Promise<string> | string,
): Promise<FuzzStats> {
  const started = performance.now();
  const outcomes: Record<string, number> = {};
  const from = run.from ?? 0;
  for (let i = from; i < from + run.iterations; i++) {
    const fail = (what: string): never => {
      throw new FuzzFailure(target, run.seed, i, what);
    };
    const outcome = await iteration(iterationRng(run.seed, i), fail, i);
    outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
  }
  return {
    target,
    iterations: run.iterations,
    outcomes,
    seconds: (performance.now() - started) / 1000,
  };
}

// ---------------------------------------------------------------------------
// A recording of a real migration: the corpus every mutation starts from

/** The bytes a sender wrote in a real two-round migration, and what the target must end with. */
export interface Recording {
  /** The sender's whole stream: HELLO, two rounds of PAGES, REFS and ZEROS, DONE. */
  stream: Uint8Array;
  /** Start and length of each frame in the stream. */
  frames: { at: number; bytes: number; type: number }[];
  /** The guests' final RAM, in gang order. */
  guests: { name: string; ram: Uint8Array }[];
}

/** A ByteStream that records what is written and answers as a receiver that accepts everything. */
class RecordingPeer {
  written: Uint8Array[] = [];
  #answers: Uint8Array[] = [];
  #waiting: (() => void) | undefined;
  #closed = false;
  #pending = new Uint8Array(0);

  write(p: Uint8Array): Promise<number> {
    this.written.push(p.slice());
    // Answer each frame that needs an answer, as a receiver would.
    let bytes = new Uint8Array(this.#pending.length + p.length);
    bytes.set(this.#pending);
    bytes.set(p, this.#pending.length);
    while (bytes.length >= HEADER_BYTES) {
      const view = new DataView(bytes.buffer, bytes.byteOffset);
      const type = view.getUint8(0);
      const length = view.getUint32(4, true);
      if (bytes.length < HEADER_BYTES + length) break;
      const answer = (t: number, value: number) => {
        const out = new Uint8Array(HEADER_BYTES + 4);
        const v = new DataView(out.buffer);
        v.setUint8(0, t);
        v.setUint32(4, 4, true);
        v.setUint32(HEADER_BYTES, value, true);
        this.#answers.push(out);
      };
      if (type === FrameType.Hello) answer(FrameType.Welcome, PROTOCOL_VERSION);
      if (type === FrameType.RoundEnd) {
        answer(FrameType.RoundDone, view.getUint32(HEADER_BYTES, true));
      }
      if (type === FrameType.Done) answer(FrameType.Verified, length / 16);
      bytes = bytes.subarray(HEADER_BYTES + length);
    }
    this.#pending = bytes.slice();
    this.#waiting?.();
    return Promise.resolve(p.length);
  }

  async read(p: Uint8Array): Promise<number | null> {
    while (this.#answers.length === 0) {
      if (this.#closed) return null;
      await new Promise<void>((resolve) => (this.#waiting = resolve));
    }
    const next = this.#answers.shift()!;
    p.set(next);
    return next.length;
  }

  close(): void {
    this.#closed = true;
    this.#waiting?.();
  }
}

/**
 * Records a real migration of three small guests (contents shared within
 * and across guests, zero pages, holes, a short last page) over two
 * rounds, with pages changed, zeroed and copied between the rounds.
 *
 * Requires `--allow-ffi`, `--allow-read`, `--allow-write`.
 */
export async function recordMigration(): Promise<Recording> {
  const shared = (i: number) => patternPage(500 + (i % 3));
  const paths = [0, 1, 2].map((g) =>
    makeRamFile(
      shmPath(`fuzz-src${g}`),
      Array.from({ length: 12 }, (_, p) => {
        if (p % 4 === 0) return "hole" as const;
        if (p % 4 === 1) return shared(p);
        if (p % 6 === 2) return "zero" as const;
        return patternPage(g * 100 + p);
      }),
      g === 2 ? 11 * PAGE_SIZE + 100 : 12 * PAGE_SIZE,
    )
  );
  try {
    const peer = new RecordingPeer();
    using gang = Gang.open(paths.map((path, g) => ({ name: `fz${g}`, path })), { seed: 0x5eedn });
    const sender = await GangSender.connect(gang, peer, {});
    await sender.prepare();
    await sender.round();
    // Between the rounds: new contents, copies of contents sent before, and zeroed pages.
    {
      using ram = RamFile.open(paths[0]!, { write: true });
      const buf = new Uint8Array(3 * PAGE_SIZE);
      buf.set(patternPage(9999), 0);
      buf.set(patternPage(102), PAGE_SIZE); // guest 1's page 2: a reference
      ram.write(Uint32Array.of(3, 5, 7), buf); // page 7 becomes zero
    }
    await sender.round({ final: true });
    await sender.verify();
    sender.close();
    const stream = concat(peer.written);
    return {
      stream,
      frames: splitFrames(stream),
      guests: paths.map((path, g) => ({ name: `fz${g}`, ram: readRamFile(path) })),
    };
  } finally {
    await removeFiles(...paths);
  }
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((sum, c) => sum + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

function splitFrames(stream: Uint8Array): Recording["frames"] {
  const frames = [];
  const view = new DataView(stream.buffer, stream.byteOffset, stream.byteLength);
  for (let at = 0; at + HEADER_BYTES <= stream.length;) {
    // A frame cut short by the end of the stream counts up to that end.
    const bytes = Math.min(HEADER_BYTES + view.getUint32(at + 4, true), stream.length - at);
    frames.push({ at, bytes, type: view.getUint8(at) });
    at += bytes;
  }
  return frames;
}

// ---------------------------------------------------------------------------
// Mutations

const INTERESTING_U32 = [
  0,
  1,
  2,
  7,
  11,
  12,
  255,
  4095,
  4096,
  0x7fffffff,
  0x80000000,
  0xfffffffe,
  0xffffffff,
];
const INTERESTING_U8 = [0, 1, 2, 3, 10, 11, 12, 20, 21, 30, 31, 0x7f, 0x80, 0xff];

/** One random change to a valid stream, and its description. */
function mutate(rng: Rng, recording: Recording): { bytes: Uint8Array; how: string } {
  const { stream, frames } = recording;
  const frame = rng.pick(frames);
  const out = stream.slice();
  const view = new DataView(out.buffer);
  switch (rng.int(9)) {
    case 0: {
      const n = 1 + rng.int(4);
      const at: number[] = [];
      for (let i = 0; i < n; i++) {
        const bit = rng.int(out.length * 8);
        out[bit >> 3]! ^= 1 << (bit & 7);
        at.push(bit);
      }
      return { bytes: out, how: `flip bits ${at.join(",")}` };
    }
    case 1: {
      const at = rng.int(out.length);
      out[at] = rng.pick(INTERESTING_U8);
      return { bytes: out, how: `byte ${at} = ${out[at]}` };
    }
    case 2: {
      const field = rng.pick(["type", "flags", "guest", "length"] as const);
      if (field === "type") view.setUint8(frame.at, rng.int(40));
      if (field === "flags") view.setUint8(frame.at + 1, rng.pick(INTERESTING_U8));
      if (field === "guest") view.setUint16(frame.at + 2, rng.pick([0, 1, 2, 3, 0xffff]), true);
      if (field === "length") {
        const length = view.getUint32(frame.at + 4, true);
        view.setUint32(
          frame.at + 4,
          rng.pick([0, 1, length - 1, length + 1, length * 2, rng.u32(), ...INTERESTING_U32]) >>> 0,
          true,
        );
      }
      return { bytes: out, how: `${field} of the frame at ${frame.at}` };
    }
    case 3: {
      const body = frame.bytes - HEADER_BYTES;
      if (body < 4) return { bytes: out, how: "nothing (empty body)" };
      const words = Math.min(Math.floor(body / 4), 64);
      const at = frame.at + HEADER_BYTES + 4 * rng.int(words);
      const value = rng.chance(0.5) ? rng.pick(INTERESTING_U32) : rng.u32();
      view.setUint32(at, value, true);
      return { bytes: out, how: `u32 at ${at} = ${value}` };
    }
    case 4: {
      const at = rng.int(stream.length);
      return { bytes: stream.slice(0, at), how: `truncated at ${at}` };
    }
    case 5: {
      const without = concat([
        stream.subarray(0, frame.at),
        stream.subarray(frame.at + frame.bytes),
      ]);
      return { bytes: without, how: `frame at ${frame.at} dropped` };
    }
    case 6: {
      const copy = stream.subarray(frame.at, frame.at + frame.bytes);
      const twice = concat([
        stream.subarray(0, frame.at + frame.bytes),
        copy,
        stream.subarray(frame.at + frame.bytes),
      ]);
      return { bytes: twice, how: `frame at ${frame.at} repeated` };
    }
    case 7: {
      const other = rng.pick(frames);
      const [a, b] = frame.at < other.at ? [frame, other] : [other, frame];
      if (a === b) return { bytes: out, how: "nothing (same frame)" };
      const swapped = concat([
        stream.subarray(0, a.at),
        stream.subarray(b.at, b.at + b.bytes),
        stream.subarray(a.at + a.bytes, b.at),
        stream.subarray(a.at, a.at + a.bytes),
        stream.subarray(b.at + b.bytes),
      ]);
      return { bytes: swapped, how: `frames at ${a.at} and ${b.at} swapped` };
    }
    default: {
      const junk = rng.bytes(1 + rng.int(64));
      const inserted = concat([stream.subarray(0, frame.at), junk, stream.subarray(frame.at)]);
      return {
        bytes: inserted,
        how: `${junk.length} random bytes before the frame at ${frame.at}`,
      };
    }
  }
}

/** One to three mutations in a row. */
function mutateSome(rng: Rng, recording: Recording): { bytes: Uint8Array; how: string } {
  let current = recording;
  const hows: string[] = [];
  const n = 1 + rng.int(3);
  for (let i = 0; i < n; i++) {
    const { bytes, how } = mutate(rng, current);
    hows.push(how);
    current = { ...current, stream: bytes, frames: splitFrames(bytes) };
    if (current.frames.length === 0) break;
  }
  return { bytes: current.stream, how: hows.join("; ") };
}

// ---------------------------------------------------------------------------
// Target 1: the decoders, on random bodies and bodies of real frames, mutated

/**
 * Fuzzes decodeHello, decodePages, decodePairs, decodeRoundEnd, decodeDone,
 * decodeU32 and readHeader: each returns or throws a ProtocolError.
 *
 * Requires nothing beyond the recording.
 */
export function fuzzDecoders(run: FuzzRun, recording: Recording): Promise<FuzzStats> {
  const bodies = recording.frames.map((f) =>
    recording.stream.subarray(f.at + HEADER_BYTES, f.at + f.bytes)
  );
  return runTarget("decoders", run, (rng, fail) => {
    let body: Uint8Array;
    if (rng.chance(0.3)) body = rng.bytes(rng.int(300));
    else {
      body = rng.pick(bodies).slice();
      const changes = 1 + rng.int(4);
      for (let i = 0; i < changes && body.length > 0; i++) {
        const at = rng.int(body.length);
        body[at] = rng.chance(0.5) ? rng.pick(INTERESTING_U8) : rng.u32() & 0xff;
      }
      if (rng.chance(0.2)) body = body.subarray(0, rng.int(body.length + 1));
    }
    const decoders: [string, () => unknown][] = [
      ["Hello", () => decodeHello(body)],
      ["Pages", () => decodePages(body)],
      ["compressed Pages", () => decodePages(body, FrameFlag.Compressed)],
      ["Deltas", () => decodeDeltas(body)],
      ["compressed Deltas", () => decodeDeltas(body, FrameFlag.Compressed)],
      ["Refs", () => decodePairs(body, "Refs")],
      ["RoundEnd", () => decodeRoundEnd(body)],
      ["Done", () => decodeDone(body, rng.int(6))],
      ["U32", () => decodeU32(body, "Welcome")],
      ["header", () => readHeader(rng.bytes(HEADER_BYTES), rng.pick([0, 100, 2 ** 22]))],
    ];
    const [name, decode] = rng.pick(decoders);
    try {
      decode();
      return `${name}: accepted`;
    } catch (error) {
      if (!(error instanceof ProtocolError)) {
        fail(`decode${name} threw ${outcomeOf(error)} (${error}) on a ${body.length}-byte body`);
      }
      return `${name}: ${outcomeOf(error)}`;
    }
  });
}

// ---------------------------------------------------------------------------
// Target 2: FrameReader over random and mutated streams, in random pieces

/** A finite stream handed out in pieces of random sizes. */
function piecewise(rng: Rng, bytes: Uint8Array) {
  let at = 0;
  return {
    read(p: Uint8Array): Promise<number | null> {
      if (at >= bytes.length) return Promise.resolve(null);
      const n = Math.min(p.length, 1 + rng.int(rng.chance(0.5) ? 16 : 70_000), bytes.length - at);
      p.set(bytes.subarray(at, at + n));
      at += n;
      return Promise.resolve(n);
    },
    write: (p: Uint8Array) => Promise.resolve(p.length),
  };
}

/**
 * Fuzzes FrameReader: over any finite stream it yields frames, ends, or
 * throws a ProtocolError, and never reads past the stream or loops.
 */
export function fuzzFrameReader(run: FuzzRun, recording: Recording): Promise<FuzzStats> {
  return runTarget("frame-reader", run, async (rng, fail) => {
    const { bytes, how } = rng.chance(0.3)
      ? { bytes: rng.bytes(rng.int(200)), how: "random bytes" }
      : mutateSome(rng, recording);
    const reader = new FrameReader(piecewise(rng, bytes), rng.pick([64, 4096, 2 ** 22]));
    let frames = 0;
    try {
      while (await reader.next()) {
        if (++frames > bytes.length) fail(`more frames than bytes (${how})`);
      }
      if (reader.bytesRead !== bytes.length) {
        fail(`read ${reader.bytesRead} of ${bytes.length} bytes (${how})`);
      }
      return "ended cleanly";
    } catch (error) {
      if (!(error instanceof ProtocolError)) fail(`threw ${outcomeOf(error)} (${how})`);
      return outcomeOf(error);
    }
  });
}

// ---------------------------------------------------------------------------
// Targets 3 and 4: live receiver sessions

/** Errors a receiver may end a session with: the peer's fault or the link's, in words. */
function clearReceiverError(error: unknown): boolean {
  if (error instanceof ProtocolError || error instanceof TimeoutError) return true;
  if (error instanceof ConnectionError) return true;
  return error instanceof Error && error.name === "Error" &&
    /^(Digest mismatch for guest|Content \d+ read back from)/.test(error.message);
}

/** A loopback listener and a fresh target directory inside a parent that must stay clean. */
export interface SessionBench extends AsyncDisposable {
  parent: string;
  dir: string;
  /** Runs one receiver session fed `bytes`; returns the gang or the error. */
  session(bytes: Uint8Array, options?: Partial<ReceiverOptions>): Promise<
    { gang: Awaited<ReturnType<typeof receiveGang>> } | { error: unknown }
  >;
}

/**
 * A receiver bench: each session is a real receiveGang over loopback TCP,
 * fed the given bytes by a peer that then stops writing and drains the
 * answers. A session is given 20 s (its own timeouts are 2 s): longer is
 * a hang.
 *
 * Requires `--allow-net`, `--allow-ffi`, `--allow-read`, `--allow-write`.
 */
export async function startSessionBench(): Promise<SessionBench> {
  const parent = await Deno.makeTempDir({ prefix: "gangway-fuzz-" });
  const dir = join(parent, "target");
  await Deno.mkdir(dir);
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  return {
    parent,
    dir,
    async session(bytes, options = {}) {
      const client = await Deno.connect({ hostname: "127.0.0.1", port });
      const server = await listener.accept();
      const feed = (async () => {
        try {
          for (let at = 0; at < bytes.length;) at += await client.write(bytes.subarray(at));
          await client.closeWrite();
          const buf = new Uint8Array(65536);
          while ((await client.read(buf)) !== null) { /* drain the answers */ }
        } catch {
          // The receiver hung up first: that is one of the outcomes.
        } finally {
          client.close();
        }
      })();
      const received = receiveGang(server, {
        dir,
        handshakeTimeoutMs: 2000,
        idleTimeoutMs: 2000,
        maxGuestBytes: 2 ** 20,
        maxGangBytes: 4 * 2 ** 20,
        ...options,
      }).then((gang) => ({ gang }), (error) => ({ error }));
      let timer: ReturnType<typeof setTimeout> | undefined;
      const hang = new Promise<"hang">((
        resolve,
      ) => (timer = setTimeout(() => resolve("hang"), 20_000)));
      const outcome = await Promise.race([received, hang]);
      clearTimeout(timer);
      if (outcome === "hang") {
        client.close();
        throw new Error("The receiver session hung for 20 s");
      }
      await feed;
      return outcome;
    },
    async [Symbol.asyncDispose]() {
      listener.close();
      await Deno.remove(parent, { recursive: true });
    },
  };
}

function names(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
}

/** Checks a finished session: a complete gang is exactly the source; a failed one left nothing. */
async function checkSession(
  bench: SessionBench,
  outcome: Awaited<ReturnType<SessionBench["session"]>>,
  expected: Recording["guests"] | undefined,
  fail: (what: string) => never,
  how: string,
): Promise<string> {
  if (names(bench.parent).join() !== "target") {
    fail(`something was written outside the target directory: ${names(bench.parent)} (${how})`);
  }
  if ("error" in outcome) {
    if (!clearReceiverError(outcome.error)) {
      fail(`the receiver threw ${outcomeOf(outcome.error)} (${how})`);
    }
    if (names(bench.dir).length > 0) fail(`a failed gang left ${names(bench.dir)} (${how})`);
    return outcomeOf(outcome.error);
  }
  const { gang } = outcome;
  if (!expected) fail(`a gang completed from a stream that cannot complete (${how})`);
  gang.guests.forEach((guest, i) => {
    const want = expected[i]?.ram;
    const got = readRamFile(guest.path);
    if (!want || got.length !== want.length || got.some((b, j) => b !== want[j])) {
      fail(`guest ${i} ("${guest.name}") completed but differs from the source (${how})`);
    }
  });
  for (const name of names(bench.dir)) await Deno.remove(join(bench.dir, name));
  return "complete, identical to the source";
}

/**
 * Fuzzes a live receiver with mutated recordings of a real migration:
 * every session ends in a clear error (and no file left behind) or in a
 * complete gang identical to the source. Every 50th iteration (0, 50, ...)
 * replays the recording unchanged, which must complete.
 */
export async function fuzzReceiverSessions(
  run: FuzzRun,
  recording: Recording,
): Promise<FuzzStats> {
  await using bench = await startSessionBench();
  return await runTarget("receiver", run, async (rng, fail, i) => {
    const replay = i % 50 === 0;
    const { bytes, how } = replay
      ? { bytes: recording.stream, how: "the recording unchanged" }
      : mutateSome(rng, recording);
    const outcome = await bench.session(bytes);
    const result = await checkSession(bench, outcome, recording.guests, fail, how);
    if (replay && !("gang" in outcome)) fail(`the unchanged recording did not complete: ${result}`);
    return result;
  });
}

const HOSTILE_NAMES = [
  "",
  ".",
  "..",
  "../escape",
  "..\\escape",
  "a/b",
  "/etc/passwd",
  ".hidden",
  ".gangway-lock",
  "target",
  "nul\0byte",
  "new\nline",
  "tab\there",
  "del\x7f",
  "-rf",
  "--json",
  " spaced ",
  "a".repeat(255),
  "a".repeat(256),
  "é".repeat(128),
  "\u202eevil\u202d",
  "🐧",
  "con",
  "x".repeat(100) + "/..",
];
const HOSTILE_SIZES = [
  0,
  1,
  4095,
  4096,
  4097,
  2 ** 20 - 1,
  2 ** 20,
  2 ** 20 + 1,
  2 ** 32,
  2 ** 52,
  Number.MAX_SAFE_INTEGER,
];

/** A HELLO (header included) with raw guest sizes, which may exceed what a number holds. */
function rawHello(token: string, guests: { name: string; size: bigint }[]): Uint8Array {
  const hello = encodeHello({
    version: PROTOCOL_VERSION,
    pageSize: PAGE_SIZE,
    seed: 7n,
    token,
    guests: guests.map((g) => ({ name: g.name, size: 0 })),
  });
  // Patch the sizes in place: each guest is (u64 size, u16 name length, name).
  const view = new DataView(hello.buffer);
  let at = HEADER_BYTES + 26 + new TextEncoder().encode(token).length;
  for (const g of guests) {
    view.setBigUint64(at, g.size, true);
    at += 10 + view.getUint16(at + 8, true);
  }
  return hello;
}

/**
 * Fuzzes the receiver's handshake with hostile guest names, sizes and
 * counts: a gang it accepts has only plain names within the limits, and
 * nothing is ever created outside its directory or left after the peer
 * leaves.
 */
export async function fuzzHostileHellos(run: FuzzRun): Promise<FuzzStats> {
  await using bench = await startSessionBench();
  return await runTarget("hostile-hello", run, async (rng, fail) => {
    const count = rng.pick([0, 1, 2, 3, 5, 257, 1 + rng.int(8)]);
    const guests = Array.from({ length: count }, (_, i) => {
      const name = rng.chance(0.6)
        ? rng.pick(HOSTILE_NAMES)
        : rng.chance(0.5)
        ? `g${i}`
        : new TextDecoder().decode(rng.bytes(1 + rng.int(20)));
      const size = rng.chance(0.1)
        ? rng.pick([2n ** 64n - 1n, 2n ** 63n, 2n ** 53n + 1n])
        : BigInt(rng.pick(HOSTILE_SIZES));
      return { name, size };
    });
    const how = `guests ${
      JSON.stringify(guests.map((g) => [g.name.slice(0, 40), String(g.size)]))
    }`;
    const outcome = await bench.session(rawHello("", guests), { maxGuests: 256 });
    const result = await checkSession(bench, outcome, undefined, fail, how);
    return result.startsWith("ProtocolError: Gang refused")
      ? result.split(":").slice(0, 3).join(":")
      : result;
  });
}

// ---------------------------------------------------------------------------
// Target 5: the scan CLI with hostile file names, sizes and kinds

type FileKind =
  | "regular"
  | "sparse"
  | "empty"
  | "directory"
  | "fifo"
  | "symlink"
  | "dangling"
  | "loop"
  | "device";

async function makeFile(
  rng: Rng,
  dir: string,
  index: number,
): Promise<{ path: string; kind: FileKind }> {
  const raw = rng.pick(
    HOSTILE_NAMES.filter((n) =>
      n.length > 0 && !n.includes("/") && !n.includes("\0") && n !== "." && n !== ".." &&
      new TextEncoder().encode(n).length < 250
    ),
  );
  const path = join(dir, `${index}-${raw}`);
  const kind = rng.pick<FileKind>([
    "regular",
    "regular",
    "sparse",
    "empty",
    "directory",
    "fifo",
    "symlink",
    "dangling",
    "loop",
    "device",
  ]);
  switch (kind) {
    case "regular": {
      const size = rng.pick([1, 4095, 4096, 4097, 3 * 4096 + 1, 1 + rng.int(256 * 1024)]);
      await Deno.writeFile(path, rng.bytes(size));
      break;
    }
    case "sparse":
      await Deno.truncate(path, rng.pick([2 ** 20, 64 * 2 ** 20])).catch(async () => {
        await Deno.writeFile(path, new Uint8Array(0));
        await Deno.truncate(path, 2 ** 20);
      });
      break;
    case "empty":
      await Deno.writeFile(path, new Uint8Array(0));
      break;
    case "directory":
      await Deno.mkdir(path);
      break;
    case "fifo":
      await new Deno.Command("mkfifo", { args: [path] }).output();
      break;
    case "symlink": {
      await Deno.writeFile(`${path}.target`, rng.bytes(4096));
      await Deno.symlink(`${path}.target`, path);
      break;
    }
    case "dangling":
      await Deno.symlink(join(dir, "nowhere"), path);
      break;
    case "loop":
      await Deno.symlink(path, path);
      break;
    case "device":
      await Deno.symlink("/dev/null", path);
      break;
  }
  return { path, kind };
}

/**
 * Fuzzes `scan --json FILE...` with hostile names, sizes and kinds of
 * file: it prints one JSON document naming every file (exit 0) or one
 * clear error and nothing on stdout (exit 2), within 20 s.
 *
 * Requires `--allow-run` (deno, mkfifo), `--allow-read`, `--allow-write`.
 */
export async function fuzzScanCli(run: FuzzRun): Promise<FuzzStats> {
  const dir = await Deno.makeTempDir({ prefix: "gangway-fuzz-scan-" });
  try {
    return await runTarget("scan-cli", run, async (rng, fail) => {
      const files = [];
      for (let i = 0; i < 1 + rng.int(3); i++) files.push(await makeFile(rng, dir, i));
      const how = JSON.stringify(
        files.map((f) => [f.kind, f.path.slice(dir.length + 1, dir.length + 40)]),
      );
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-ffi",
          "--allow-read",
          "--allow-env=GANGWAY_LIB",
          new URL("../src/cli/scan.ts", import.meta.url).href,
          "--json",
          ...files.map((f) => f.path),
        ],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
      const output = await child.output();
      clearTimeout(timer);
      for (const entry of Deno.readDirSync(dir)) {
        await Deno.remove(join(dir, entry.name), { recursive: true });
      }
      const stdout = new TextDecoder().decode(output.stdout);
      const stderr = new TextDecoder().decode(output.stderr);
      if (output.signal === "SIGKILL") fail(`scan hung (${how})`);
      if (output.code === 0) {
        const report = JSON.parse(stdout);
        if (report.guests.length !== files.length) {
          fail(`scan reported ${report.guests.length} of ${files.length} files (${how})`);
        }
        return "scanned";
      }
      if (output.code !== 2) {
        fail(`scan exited with ${output.code}: ${stderr.slice(0, 300)} (${how})`);
      }
      if (stdout !== "") fail(`scan failed but printed on stdout (${how})`);
      const first = stderr.split("\n")[0]!;
      if (!/^error: Cannot [a-z]/.test(first)) fail(`scan's error is not clear: ${first} (${how})`);
      return first.replace(/"[^"]*"/g, '""').replace(/\d+/g, "N").slice(0, 70);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
