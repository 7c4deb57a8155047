/**
 * Finding and ending the processes of a lab run: what runs inside its
 * namespaces, and its QEMUs by guest name. Internal to src/lab.
 *
 * @module
 */
import { findQemus } from "../qemu/discover.ts";
import { runTool, runToolSync } from "./netns_exec.ts";

export { killAndWait, killQuietly } from "../_processes.ts";

/**
 * The pids of the processes inside a network namespace (`ip netns pids`).
 *
 * Requires `--allow-run` (runs `ip`).
 */
export async function namespacePids(namespace: string): Promise<number[]> {
  try {
    return parsePids(await runTool("ip", ["netns", "pids", namespace]));
  } catch {
    return []; // the namespace is gone, and its processes with it
  }
}

/**
 * {@linkcode namespacePids}, synchronously: for exit handlers.
 *
 * Requires `--allow-run` (runs `ip`).
 */
export function namespacePidsSync(namespace: string): number[] {
  try {
    return parsePids(runToolSync("ip", ["netns", "pids", namespace]));
  } catch {
    return [];
  }
}

/**
 * Every running QEMU that has a guest name (`-name guest=NAME`), whether
 * gangway could migrate it or not (the QEMU methods' guests have no RAM
 * file, so they are among those it could not).
 *
 * Requires `--allow-run` (runs `ps` and `cat`).
 */
export async function namedQemus(): Promise<{ pid: number; name: string }[]> {
  const { usable, unusable } = await findQemus();
  return [
    ...usable.map((q) => ({ pid: q.pid, name: q.commandLine.instance.name })),
    ...unusable.flatMap((q) => {
      const value = q.argv[q.argv.indexOf("-name") + 1];
      const name = value?.split(",")[0]?.replace(/^guest=/, "");
      return q.argv.includes("-name") && name ? [{ pid: q.pid, name }] : [];
    }),
  ];
}

/**
 * The pids of the running QEMUs whose guest name starts with a prefix.
 *
 * Requires `--allow-run` (runs `ps` and `cat`).
 */
export async function qemuPidsNamed(prefix: string): Promise<number[]> {
  return (await namedQemus()).filter((q) => q.name.startsWith(prefix)).map((q) => q.pid);
}

function parsePids(text: string): number[] {
  return text.split(/\s+/).filter((word) => /^\d+$/.test(word)).map(Number);
}
