/**
 * The two ends of {@linkcode measureThroughput}, run as separate processes
 * on the two lab hosts:
 *
 * - `receive HOST`: listens on HOST (any port), prints `{"port": N}`,
 *   accepts one connection, reads it to the end and prints
 *   `{"bytes": B, "end": T}`;
 * - `send HOST PORT BYTES`: prints `{"start": T}`, connects and writes
 *   BYTES bytes.
 *
 * T is wall-clock time in milliseconds, which both processes share: the
 * transfer is timed from the sender's connect to the receiver's last byte.
 * A clock in the receiver alone would start late whenever the receiver
 * was scheduled late, and data that queued meanwhile would inflate the
 * rate.
 *
 * Requires `--allow-net`.
 *
 * @module
 */
import { wallClockMs } from "./_time.ts";

/** Size of each write and read: large, since a system call is costly here. */
const CHUNK_BYTES = 1 << 20;

/**
 * Accepts one connection and reads it to the end.
 *
 * @param hostname Address to listen on
 * @param report Called with the port once listening
 * @returns Bytes read, and the wall-clock time of the end of the stream
 */
export async function receive(
  hostname: string,
  report: (port: number) => void,
): Promise<{ bytes: number; end: number }> {
  using listener = Deno.listen({ hostname, port: 0 });
  report(listener.addr.port);
  using conn = await listener.accept();
  const buffer = new Uint8Array(CHUNK_BYTES);
  let bytes = 0;
  for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) bytes += n;
  return { bytes, end: wallClockMs() };
}

/**
 * Connects and writes a number of bytes (zeros: nothing on the path
 * compresses them).
 *
 * @param hostname Address to connect to
 * @param port Its port
 * @param bytes How many bytes to send
 * @param report Called with the wall-clock time just before connecting
 */
export async function send(
  hostname: string,
  port: number,
  bytes: number,
  report: (start: number) => void,
): Promise<void> {
  report(wallClockMs());
  using conn = await Deno.connect({ hostname, port });
  const chunk = new Uint8Array(CHUNK_BYTES);
  for (let left = bytes; left > 0;) {
    left -= await conn.write(chunk.subarray(0, Math.min(left, chunk.length)));
  }
}

if (import.meta.main) {
  const [role, hostname, port, bytes] = Deno.args;
  if (role === "receive" && hostname) {
    const result = await receive(hostname, (port) => console.log(JSON.stringify({ port })));
    console.log(JSON.stringify(result));
  } else if (role === "send" && hostname && port && bytes) {
    await send(
      hostname,
      Number(port),
      Number(bytes),
      (start) => console.log(JSON.stringify({ start })),
    );
  } else {
    console.error("usage: link_probe_peer.ts receive HOST | send HOST PORT BYTES");
    Deno.exit(2);
  }
}
