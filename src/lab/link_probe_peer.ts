/**
 * The two ends of {@linkcode measureThroughput}, run as separate processes
 * on the two lab hosts:
 *
 * - `receive HOST`: listens on HOST (any port), prints `{"port": N}`,
 *   accepts one connection, reads it to the end and prints
 *   `{"bytes": B, "seconds": S}`, timed from accept to end of stream;
 * - `send HOST PORT BYTES`: connects and writes BYTES bytes.
 *
 * Requires `--allow-net`.
 *
 * @module
 */

/** Size of each write and read: large, since a system call is costly here. */
const CHUNK_BYTES = 1 << 20;

/**
 * Accepts one connection and reads it to the end.
 *
 * @param hostname Address to listen on
 * @param report Called with the port once listening
 * @returns Bytes read and seconds from accept to end of stream
 */
export async function receive(
  hostname: string,
  report: (port: number) => void,
): Promise<{ bytes: number; seconds: number }> {
  using listener = Deno.listen({ hostname, port: 0 });
  report(listener.addr.port);
  using conn = await listener.accept();
  const start = performance.now();
  const buffer = new Uint8Array(CHUNK_BYTES);
  let bytes = 0;
  for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) bytes += n;
  return { bytes, seconds: (performance.now() - start) / 1000 };
}

/**
 * Connects and writes a number of bytes (zeros: nothing on the path
 * compresses them).
 *
 * @param hostname Address to connect to
 * @param port Its port
 * @param bytes How many bytes to send
 */
export async function send(hostname: string, port: number, bytes: number): Promise<void> {
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
    await send(hostname, Number(port), Number(bytes));
  } else {
    console.error("usage: link_probe_peer.ts receive HOST | send HOST PORT BYTES");
    Deno.exit(2);
  }
}
