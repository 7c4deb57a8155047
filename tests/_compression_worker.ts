/**
 * A worker of compression_test.ts: compresses and decompresses blocks of
 * its own and posts how many round trips did not give the block back.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { compress, compressBound, decompress } from "../src/native/compression.ts";

self.onmessage = (event: MessageEvent<{ seed: number; iterations: number }>) => {
  const { seed, iterations } = event.data;
  const block = new Uint8Array(256 * 1024);
  for (let i = 0; i < block.length; i++) block[i] = Math.floor(i / (seed + 3)) & 0xff;
  const packed = new Uint8Array(compressBound(block.length));
  const out = new Uint8Array(block.length);
  const want = new Uint32Array(block.buffer);
  const got = new Uint32Array(out.buffer);
  let failures = 0;
  for (let iteration = 0; iteration < iterations; iteration++) {
    const size = compress(block, packed, 1 + (iteration % 3));
    if (!decompress(packed.subarray(0, size), out) || got.some((word, i) => word !== want[i])) {
      failures++;
    }
  }
  self.postMessage(failures);
  self.close();
};
