/**
 * Names of the lab's network namespaces, and listing and removing them.
 *
 * A lab namespace is named `gw-PID-ID-ROLE`: the pid of the process that
 * made it (so a later run can tell whether its maker is still alive), a
 * random id (so two networks of one process never collide) and its role,
 * `src` or `dst`. Its end of the veth pair is named `gw-ROLE`; device names
 * live inside the namespace, so they never collide either.
 *
 * @module
 */
import { runTool, runToolSync, ToolError } from "./netns_exec.ts";

/** What every lab namespace name starts with. */
export const LAB_PREFIX = "gw-";

/** The two ends of the lab link. */
export type LabRole = "src" | "dst";

/** What a lab namespace's name says. */
export interface LabNamespaceName {
  /** The full name. */
  name: string;
  /** The pid of the process that made it. */
  pid: number;
  /** The random id of its network. */
  id: string;
  /** Which end it is. */
  role: LabRole;
}

const NAME_PATTERN = /^gw-(\d+)-([0-9a-f]+)-(src|dst)$/;

/**
 * The name of a lab namespace.
 *
 * @param pid The maker's pid
 * @param id The network's random id (lowercase hex)
 * @param role Which end
 * @returns e.g. "gw-4242-9f3a-src"
 */
export function namespaceName(pid: number, id: string, role: LabRole): string {
  return `${LAB_PREFIX}${pid}-${id}-${role}`;
}

/**
 * Reads a lab namespace name.
 *
 * @param name Any namespace name
 * @returns What it says, or null when it is not a lab namespace
 */
export function parseNamespaceName(name: string): LabNamespaceName | null {
  const match = NAME_PATTERN.exec(name);
  if (!match) return null;
  return { name, pid: Number(match[1]), id: match[2]!, role: match[3] as LabRole };
}

/**
 * The name of the veth end inside a lab namespace of the given role.
 *
 * @param role Which end
 * @returns "gw-src" or "gw-dst"
 */
export function deviceName(role: LabRole): string {
  return `${LAB_PREFIX}${role}`;
}

/**
 * Lists the named network namespaces of this machine.
 *
 * Requires `--allow-run` (runs `ip`).
 *
 * @returns Their names
 */
export async function listNamespaces(): Promise<string[]> {
  const text = (await runTool("ip", ["-j", "netns", "list"])).trim();
  if (text === "") return [];
  return (JSON.parse(text) as { name: string }[]).map((entry) => entry.name);
}

/**
 * Removes a lab namespace and its veth pair; a namespace that is already
 * gone is not an error.
 *
 * The link is deleted first and on its own: `ip netns del` only unlinks
 * the name, and a process still running inside would keep the namespace,
 * and so the link, alive.
 *
 * Requires `--allow-run` (runs `ip`).
 *
 * @param name The namespace
 * @throws ToolError when it exists and cannot be removed
 */
export async function removeNamespace(name: string): Promise<void> {
  const parsed = parseNamespaceName(name);
  if (parsed) await ignoreGone(runTool("ip", ["-n", name, "link", "del", deviceName(parsed.role)]));
  await ignoreGone(runTool("ip", ["netns", "del", name]));
}

/**
 * {@linkcode removeNamespace}, synchronously: for exit handlers.
 *
 * Requires `--allow-run` (runs `ip`).
 *
 * @param name The namespace
 * @throws ToolError when it exists and cannot be removed
 */
export function removeNamespaceSync(name: string): void {
  const parsed = parseNamespaceName(name);
  if (parsed) {
    ignoreGoneSync(() => runToolSync("ip", ["-n", name, "link", "del", deviceName(parsed.role)]));
  }
  ignoreGoneSync(() => runToolSync("ip", ["netns", "del", name]));
}

/** True when `ip` failed because the namespace or device does not exist. */
function isGone(error: unknown): boolean {
  return error instanceof ToolError &&
    /No such file or directory|Cannot find device/.test(error.stderr);
}

async function ignoreGone(call: Promise<unknown>): Promise<void> {
  try {
    await call;
  } catch (error) {
    if (!isGone(error)) throw error;
  }
}

function ignoreGoneSync(call: () => unknown): void {
  try {
    call();
  } catch (error) {
    if (!isGone(error)) throw error;
  }
}
