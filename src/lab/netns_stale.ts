/**
 * Removes the lab namespaces that crashed runs left behind.
 *
 * @module
 */
import { isAlive } from "../_processes.ts";
import { listNamespaces, parseNamespaceName, removeNamespace } from "./netns_names.ts";

/**
 * Removes every lab namespace (`gw-PID-ID-src|dst`) whose maker is no
 * longer running, with its veth pair. Namespaces of live processes, this
 * one included, are left alone, so concurrent runs are safe.
 *
 * A process still running inside a removed namespace (say a QEMU of the
 * crashed run) is not killed: it keeps running, cut off from the network.
 *
 * Requires `--allow-run` (runs `ip`, and checks pids).
 *
 * @returns The names of the namespaces removed
 *
 * @example
 * ```ts
 * const removed = await cleanStaleNetworks();
 * if (removed.length > 0) console.log(`removed stale namespaces: ${removed.join(", ")}`);
 * ```
 */
export async function cleanStaleNetworks(): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await listNamespaces()) {
    const parsed = parseNamespaceName(name);
    if (!parsed || isAlive(parsed.pid)) continue;
    await removeNamespace(name);
    removed.push(name);
  }
  return removed;
}
