/**
 * Lines of a child's output, and free ports on the loopback. Internal to src/lab.
 *
 * @module
 */

export { forEachLine } from "../_lines.ts";

/**
 * The first of `count` consecutive TCP ports that are free on 127.0.0.1
 * now (another program may take one before it is used: best effort, for
 * the loopback fallback only).
 *
 * Requires `--allow-net`.
 */
export function freePortRun(count: number): number {
  for (let attempt = 0; attempt < 20; attempt++) {
    const first = 20_000 + Math.floor(Math.random() * 30_000);
    const listeners: Deno.Listener[] = [];
    try {
      for (let i = 0; i < count; i++) {
        listeners.push(Deno.listen({ hostname: "127.0.0.1", port: first + i }));
      }
      return first;
    } catch {
      // taken: try another run
    } finally {
      for (const listener of listeners) listener.close();
    }
  }
  throw new Error(`Cannot find ${count} free TCP ports on 127.0.0.1`);
}
