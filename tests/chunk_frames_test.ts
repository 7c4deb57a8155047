import { assert, assertEquals, assertThrows } from "./_assert.ts";
import type { Gang } from "../src/scan/gang.ts";
import { PAGE_SIZE } from "../src/native/ram_file.ts";
import { type ChunkPlan, Op } from "../src/plan/round_planner.ts";
import { ChunkFrames } from "../src/transfer/chunk_frames.ts";
import { CompressionPolicy, type SenderWaits } from "../src/transfer/compression_policy.ts";
import { type ByteStream, FrameReader, FrameWriter } from "../src/transfer/frame_io.ts";
import {
  decodeDeltas,
  decodePages,
  decodePairs,
  gatherPages,
  matchesDigest,
  pagesFrameBytes,
  writePagesFrame,
} from "../src/transfer/page_frames.ts";
import { FrameType, ProtocolError } from "../src/transfer/protocol.ts";
import { NONE } from "../src/plan/target_contents.ts";

const CHUNK = 256;

/** What ChunkFrames reads of a gang: one guest, and its pages' hashes (page i hashes to i). */
function oneGuest(pages: number): Gang {
  const hashes = BigUint64Array.from({ length: pages }, (_, i) => BigInt(i));
  return {
    guests: [{ number: 0 }],
    index: { pageHashes: () => hashes, seed: 1n },
  } as unknown as Gang;
}

/** A chunk's page bytes: text-like (zstd shrinks them), page i of chunk c marked with c and i. */
function chunkData(chunk: number): Uint8Array {
  const data = new Uint8Array(CHUNK * PAGE_SIZE);
  for (let i = 0; i < CHUNK; i++) {
    const page = data.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE);
    page.fill(0x61 + (i % 26));
    new DataView(page.buffer, page.byteOffset).setUint32(0, chunk * CHUNK + i, true);
  }
  return data;
}

/** A plan whose ops alternate runs of Full and Ref (not groupable): frames of both kinds interleave. */
function mixedPlan(chunk: number, nextId: { value: number }): ChunkPlan {
  const ops = new Uint8Array(CHUNK);
  const ids = new Uint32Array(CHUNK);
  for (let i = 0; i < CHUNK; i++) {
    ops[i] = Math.floor(i / 32) % 2 === 0 ? Op.Full : Op.Ref;
    ids[i] = ops[i] === Op.Full ? nextId.value++ : chunk;
  }
  const slots = Uint16Array.from(ids, (_, i) => i);
  return { length: CHUNK, groupable: false, ops, slots, ids, bases: new Uint32Array(CHUNK) };
}

/** A stream that keeps what it is written. */
function recordingStream(): ByteStream & { bytes: () => Uint8Array } {
  const parts: Uint8Array[] = [];
  return {
    read: () => Promise.resolve(null),
    write: (p: Uint8Array) => {
      parts.push(p.slice());
      return Promise.resolve(p.length);
    },
    bytes: () => {
      const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
      let at = 0;
      for (const p of parts) all.set(p, (at += p.length) - p.length);
      return all;
    },
  };
}

Deno.test("ChunkFrames writes frames in the order they were queued while zstd runs on other threads, and the scan's buffer may be reused at once", async () => {
  const chunks = 8;
  const stream = recordingStream();
  const writer = new FrameWriter(stream);
  const waits: SenderWaits = { link: 0, zstd: 0 };
  const policy = new CompressionPolicy("zstd", { streamBytesPerSecond: 0, waits });
  const frames = new ChunkFrames(oneGuest(chunks * CHUNK), policy, (n) => writer.reserve(n), waits);
  const nextId = { value: 0 };
  const scanBuffer = new Uint8Array(CHUNK * PAGE_SIZE);
  for (let c = 0; c < chunks; c++) {
    scanBuffer.set(chunkData(c));
    await frames.send(0, c * CHUNK, mixedPlan(c, nextId), scanBuffer);
    scanBuffer.fill(0xee); // the next scan overwrites the buffer
  }
  await frames.drain();
  await writer.flush();
  assert(policy.report.frames > 0, "page data went compressed");

  const reader = readBack(stream.bytes());
  const seen: string[] = [];
  let expectedId = 0;
  for (let frame = await reader.next(); frame; frame = await reader.next()) {
    if (frame.type === FrameType.Pages) {
      const { pages, ids, data } = decodePages(frame.body, frame.flags);
      for (let i = 0; i < pages.length; i++) {
        assertEquals(ids[i], expectedId++, "content ids in stream order");
        const page = data.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE);
        assertEquals(new DataView(page.buffer, page.byteOffset).getUint32(0, true), pages[i]);
      }
      seen.push(`P${pages[0]}`);
    } else {
      assertEquals(frame.type, FrameType.Refs);
      seen.push(`R${decodePairs(frame.body, "Refs").a[0]}`);
    }
  }
  // Each chunk: Full 0-31, Ref 32-63, Full 64-95, ... in page order.
  const expected = [];
  for (let c = 0; c < chunks; c++) {
    for (let run = 0; run < CHUNK / 32; run++) {
      expected.push(`${run % 2 === 0 ? "P" : "R"}${c * CHUNK + run * 32}`);
    }
  }
  assertEquals(seen, expected);
});

/** A reader of the frames a recording stream took. */
function readBack(written: Uint8Array): FrameReader {
  let at = 0;
  return new FrameReader({
    read: (p: Uint8Array) => {
      if (at === written.length) return Promise.resolve(null);
      const n = Math.min(p.length, written.length - at);
      p.set(written.subarray(at, at + n));
      at += n;
      return Promise.resolve(n);
    },
    write: () => Promise.reject(new Error("read only")),
  });
}

/** Sends `chunks` chunks of Full pages, spending `busyMs` on each, to a stream that takes `streamMs` per write. */
async function linkWaitShare(streamMs: number, busyMs: number, chunks = 12): Promise<number> {
  const started = performance.now();
  const stream = {
    read: () => Promise.resolve(null),
    write: async (p: Uint8Array) => {
      // No wait at all for a stream that never holds the sender up: a timer's turn of the
      // event loop takes milliseconds on a loaded machine, which is not the stream's doing.
      if (streamMs > 0) await new Promise((resolve) => setTimeout(resolve, streamMs));
      return p.length;
    },
  };
  const writer = new FrameWriter(stream);
  const waits: SenderWaits = { link: 0, zstd: 0 };
  const policy = new CompressionPolicy("none", { streamBytesPerSecond: 0, waits });
  const frames = new ChunkFrames(oneGuest(chunks * CHUNK), policy, (n) => writer.reserve(n), waits);
  const data = chunkData(0);
  const nextId = { value: 0 };
  for (let c = 0; c < chunks; c++) {
    const until = performance.now() + busyMs;
    while (performance.now() < until) {
      // the sender's own work on the next chunk
    }
    const ids = Uint32Array.from({ length: CHUNK }, () => nextId.value++);
    const plan: ChunkPlan = {
      length: CHUNK,
      groupable: true,
      ops: new Uint8Array(CHUNK).fill(Op.Full),
      slots: Uint16Array.from(ids, (_, i) => i),
      ids,
      bases: new Uint32Array(CHUNK),
    };
    await frames.send(0, c * CHUNK, plan, data);
  }
  await frames.drain();
  return waits.link * 1000 / (performance.now() - started);
}

Deno.test("ChunkFrames counts the sender's waits for the link: most of the time while the stream sets the pace, little while the sender does", async () => {
  const slowLink = await linkWaitShare(40, 1);
  assert(slowLink > 0.5, `slow link: ${slowLink}`);
  const busySender = await linkWaitShare(0, 20);
  assert(busySender < 0.2, `busy sender: ${busySender}`);
});

Deno.test("decodePairs refuses REFS and ZEROS bodies of no entries or more than a frame's pages, saying so", () => {
  const body = (n: number, entries = n) => {
    const out = new Uint8Array(4 + entries * 8);
    new DataView(out.buffer).setUint32(0, n, true);
    return out;
  };
  assertEquals(decodePairs(body(3), "Refs").a.length, 3);
  assertThrows(() => decodePairs(body(0), "Refs"), ProtocolError, "Refs frame with 0 entries");
  assertThrows(
    () => decodePairs(body(1025, 0), "Zeros"),
    ProtocolError,
    "Zeros frame with 1025 entries",
  );
  assertThrows(() => decodePairs(body(2, 1), "Refs"), ProtocolError, "has 12 bytes, expected 20");
});

Deno.test("a PAGES frame carries its first content id and one digest of its pages' hashes; the ids must be consecutive", () => {
  const hashes = BigUint64Array.of(11n, 12n, 13n);
  const entries = { pages: Uint32Array.of(7, 3, 9), ids: Uint32Array.of(40, 41, 42), hashes };
  const data = chunkData(0);
  const frame = new Uint8Array(pagesFrameBytes(3));
  assertEquals(frame.length, 8 + 24 + 3 * 4 + 3 * PAGE_SIZE, "4 bytes an entry");
  writePagesFrame(frame, 0, entries, data, Uint16Array.of(0, 1, 2), 5n);
  const decoded = decodePages(frame.subarray(8));
  assertEquals([...decoded.pages], [7, 3, 9]);
  assertEquals([...decoded.ids], [40, 41, 42]);
  assert(matchesDigest(hashes, 5n, decoded.digest));
  assert(!matchesDigest(BigUint64Array.of(11n, 13n, 12n), 5n, decoded.digest), "order counts");
  assert(!matchesDigest(hashes, 6n, decoded.digest), "the seed counts");
  assertThrows(
    () =>
      writePagesFrame(
        frame,
        0,
        { ...entries, ids: Uint32Array.of(40, 42, 43) },
        data,
        Uint16Array.of(0, 1, 2),
        5n,
      ),
    RangeError,
    "consecutive ids",
  );
});

Deno.test("gatherPages copies page slots[i] of its source to page i, runs of slots at once", () => {
  const src = chunkData(0);
  const slots = Uint16Array.from([5, 6, 7, 2, 9, 10, 0]);
  const dst = new Uint8Array(slots.length * PAGE_SIZE);
  gatherPages(dst, src, slots);
  slots.forEach((slot, i) => {
    const page = dst.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE);
    assertEquals(page, src.subarray(slot * PAGE_SIZE, (slot + 1) * PAGE_SIZE));
  });
});

Deno.test("a grouped chunk sends its new contents (whole and as deltas, in the same frames) in page order, then its references", async () => {
  const stream = recordingStream();
  const writer = new FrameWriter(stream);
  const waits: SenderWaits = { link: 0, zstd: 0 };
  const policy = new CompressionPolicy("none", { streamBytesPerSecond: 0, waits });
  const frames = new ChunkFrames(oneGuest(CHUNK), policy, (n) => writer.reserve(n), waits);
  // Page i: Full, then Delta (from content 0), then a Ref to content 0, over and over; ids in page order.
  const ops = Uint8Array.from({ length: CHUNK }, (_, i) => [Op.Full, Op.Delta, Op.Ref][i % 3]!);
  let next = 1;
  const ids = Uint32Array.from(ops, (op) => op === Op.Ref ? 0 : next++);
  const plan: ChunkPlan = {
    length: CHUNK,
    groupable: true,
    ops,
    slots: Uint16Array.from(ids, (_, i) => i),
    ids,
    bases: new Uint32Array(CHUNK),
  };
  await frames.send(0, 0, plan, chunkData(0));
  await frames.drain();
  await writer.flush();
  const reader = readBack(stream.bytes());
  const kinds: number[] = [];
  let expectedId = 1;
  let refs = 0;
  for (let frame = await reader.next(); frame; frame = await reader.next()) {
    kinds.push(frame.type);
    if (frame.type === FrameType.Refs) refs += decodePairs(frame.body, "Refs").a.length;
    else {
      const decoded = frame.type === FrameType.Deltas
        ? decodeDeltas(frame.body, frame.flags)
        : decodePages(frame.body, frame.flags);
      assertEquals(frame.type, FrameType.Deltas, "whole pages and differences share frames");
      decoded.pages.forEach((page, i) => {
        assertEquals(decoded.bases![i], ops[page] === Op.Delta ? 0 : NONE);
        assertEquals(decoded.ids[i], expectedId++, "content ids in page order");
      });
    }
  }
  assertEquals(expectedId, next, "every new content sent");
  assertEquals(refs, CHUNK - (next - 1));
  assertEquals(kinds.at(-1), FrameType.Refs, "references last, in one frame");
  assertEquals(kinds.filter((k) => k === FrameType.Refs).length, 1);
});
