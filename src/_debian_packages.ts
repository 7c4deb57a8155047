/**
 * Debian packages that a task needs: found by a file each installs, and
 * installed with apt-get when running as root, or named in the error
 * otherwise. The one installer of the tasks (tools/setup.ts) and of the
 * QEMU layer. Internal to src and tools.
 *
 * @module
 */
import { pathExists } from "./_path_exists.ts";

/** A file that must exist and the Debian package that provides it. */
export interface Requirement {
  /** Absolute path of the file. */
  file: string;
  /** The Debian package that installs it. */
  debian: string;
}

/** True when running as root. */
export function isRoot(): boolean {
  return Deno.uid() === 0;
}

/**
 * Runs apt-get with its progress on this process's stderr.
 *
 * @throws Error naming the command when it fails
 */
export async function aptGet(args: string[]): Promise<void> {
  const status = await new Deno.Command("apt-get", {
    args,
    env: { DEBIAN_FRONTEND: "noninteractive" },
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn().status;
  if (!status.success) throw new Error(`Cannot install packages: apt-get ${args.join(" ")} failed`);
}

/**
 * Makes sure every required file exists: installs the missing packages
 * when root (saying so), otherwise throws naming them.
 *
 * Requires `--allow-read`, `--allow-sys=uid`, `--allow-run=apt-get`.
 *
 * @param purpose What needs them, for the error: "prepare QEMU guests"
 * @throws Error `Cannot PURPOSE: missing Debian packages ...` when not root
 */
export async function ensurePackages(
  requirements: readonly Requirement[],
  purpose: string,
): Promise<void> {
  const missing = new Set<string>();
  for (const { file, debian } of requirements) {
    if (!(await pathExists(file))) missing.add(debian);
  }
  if (missing.size === 0) return;
  const names = [...missing].join(" ");
  if (!isRoot()) {
    throw new Error(
      `Cannot ${purpose}: missing Debian packages ${names} ` +
        `(run as root to install them, or: sudo apt-get install -y ${names})`,
    );
  }
  console.error(`Installing Debian packages: ${names}`);
  await aptGet(["update", "-qq"]);
  await aptGet(["install", "-y", "-qq", ...missing]);
}
