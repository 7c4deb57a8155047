/**
 * Copies two connections into each other until both directions end: how
 * QEMU's migration stream crosses a target agent's connection.
 *
 * @module
 */
import { closeQuietly } from "../_close_quietly.ts";

/** Bytes per read: QEMU's device state is a few hundred KiB. */
const PIECE_BYTES = 256 * 1024;

/**
 * Copies `a` to `b` and `b` to `a`. A direction that reaches its end
 * closes the other side's writing half; a direction that fails closes
 * both connections, so neither end waits for data that cannot come.
 *
 * @param readFromA bytes of `a`'s stream read already (with a handshake): they go to `b` first
 * @returns The bytes copied each way
 */
export async function pipeBothWays(
  a: Deno.Conn,
  b: Deno.Conn,
  readFromA?: Uint8Array,
): Promise<{ aToB: number; bToA: number }> {
  const closeBoth = () => {
    for (const conn of [a, b]) {
      closeQuietly(conn);
    }
  };
  const copy = async (from: Deno.Conn, to: Deno.Conn, first?: Uint8Array): Promise<number> => {
    const buffer = new Uint8Array(PIECE_BYTES);
    let copied = 0;
    try {
      for (let piece = first;;) {
        if (piece) {
          for (let done = 0; done < piece.length;) done += await to.write(piece.subarray(done));
          copied += piece.length;
        }
        const got = await from.read(buffer);
        if (got === null) break;
        piece = buffer.subarray(0, got);
      }
      await to.closeWrite().catch(() => {});
    } catch {
      closeBoth();
    }
    return copied;
  };
  const [aToB, bToA] = await Promise.all([copy(a, b, readFromA), copy(b, a)]);
  return { aToB, bToA };
}
