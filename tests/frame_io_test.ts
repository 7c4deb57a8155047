import { assert } from "./_assert.ts";
import { FrameReader, FrameWriter } from "../src/transfer/frame_io.ts";
import { encodeU32, FrameType } from "../src/transfer/protocol.ts";

const FRAME = 512 * 1024; // two frames fill a write buffer

Deno.test("FrameWriter.streamBytesPerSecond is the stream's pace, not hidden by writes a socket buffer took at once", async () => {
  let calls = 0;
  const stream = {
    read: () => Promise.resolve(null),
    // Every other write waits 40 ms (the link drains the buffer), the others are taken at once.
    write: async (p: Uint8Array) => {
      if (calls++ % 2 === 1) await new Promise((resolve) => setTimeout(resolve, 40));
      return p.length;
    },
  };
  const writer = new FrameWriter(stream);
  for (let i = 0; i < 24; i++) await writer.write(new Uint8Array(FRAME));
  await writer.flush();
  // Two 1 MiB writes per 40 ms or more: at most about 52 MB/s (a mean of rates would say 1 GB/s).
  assert(writer.streamBytesPerSecond < 60e6, `${writer.streamBytesPerSecond} bytes/s`);
  assert(writer.streamBytesPerSecond > 20e6, `${writer.streamBytesPerSecond} bytes/s`);
});

/**
 * Runs `step` until a timer set before the first step has fired, or for
 * `deadlineMs` at most; says whether the timer fired. A loop whose awaits
 * all resolve at once never lets the event loop turn, so its timer fires
 * only once the loop ends.
 */
async function timerFiresDuring(step: () => Promise<void>, deadlineMs = 5000): Promise<boolean> {
  let fired = false;
  const timer = setTimeout(() => fired = true, 0);
  const until = performance.now() + deadlineMs;
  while (!fired && performance.now() < until) await step();
  clearTimeout(timer);
  return fired;
}

Deno.test("FrameWriter lets timers run while the stream takes every write at once", async () => {
  const writer = new FrameWriter({
    read: () => Promise.resolve(null),
    write: (p: Uint8Array) => Promise.resolve(p.length), // a send buffer that always has room
  });
  const page = new Uint8Array(4096);
  assert(await timerFiresDuring(() => writer.write(page)), "no timer ran while writing");
  await writer.flush();
});

Deno.test("FrameReader lets timers run while the stream has data buffered for every read", async () => {
  const frame = encodeU32(FrameType.RoundDone, 1);
  const reader = new FrameReader({
    read: (p: Uint8Array) => { // a receive buffer that is never empty: one frame per read
      p.set(frame);
      return Promise.resolve(frame.length);
    },
    write: (p: Uint8Array) => Promise.resolve(p.length),
  });
  const read = async () => {
    assert((await reader.next(1000))?.type === FrameType.RoundDone, "frame lost");
  };
  assert(await timerFiresDuring(read), "no timer ran while reading");
});

Deno.test("FrameWriter lets other connections be read while the stream takes every write at once", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const [near, far] = await Promise.all([
    listener.accept(),
    Deno.connect({ hostname: "127.0.0.1", port }),
  ]);
  try {
    let read = false;
    const reading = near.read(new Uint8Array(16)).then(() => read = true);
    await far.write(new Uint8Array([1])); // there to be read as soon as the loop lets it
    const writer = new FrameWriter({
      read: () => Promise.resolve(null),
      write: (p: Uint8Array) => Promise.resolve(p.length),
    });
    const page = new Uint8Array(4096);
    const until = performance.now() + 5000;
    while (!read && performance.now() < until) await writer.write(page);
    assert(read, "the other connection was not read while writing");
    await reading;
  } finally {
    near.close();
    far.close();
  }
});
