/**
 * The Debian packages the QEMU layer needs, installed with apt-get when
 * running as root, or named in the error otherwise.
 *
 * @module
 */
import { run } from "./_run.ts";
import { pathExists } from "../_path_exists.ts";

/** A file that must exist and the Debian package that provides it. */
export interface Requirement {
  /** Absolute path of the file. */
  file: string;
  /** The Debian package that installs it. */
  debian: string;
}

/** QEMU itself. */
export const QEMU_REQUIREMENTS: readonly Requirement[] = [
  { file: "/usr/bin/qemu-system-x86_64", debian: "qemu-system-x86" },
];

/** What building the guest image needs (besides apt-get and dpkg-deb). */
export const IMAGE_REQUIREMENTS: readonly Requirement[] = [
  { file: "/bin/busybox", debian: "busybox-static" },
];

/** What a guest booting from a disk needs: its copy-on-write overlay is made with qemu-img. */
export const OVERLAY_REQUIREMENTS: readonly Requirement[] = [
  { file: "/usr/bin/qemu-img", debian: "qemu-utils" },
];

/** True when running as root. */
export function isRoot(): boolean {
  return Deno.uid() === 0;
}

/** Runs `apt-get update` quietly. */
export async function aptUpdate(): Promise<void> {
  await run("apt-get", ["update", "-qq"], { env: { DEBIAN_FRONTEND: "noninteractive" } });
}

/**
 * Makes sure every required file exists: installs the missing packages when
 * root, otherwise throws naming them.
 */
export async function ensurePackages(requirements: readonly Requirement[]): Promise<void> {
  const missing = new Set<string>();
  for (const { file, debian } of requirements) {
    if (!(await pathExists(file))) missing.add(debian);
  }
  if (missing.size === 0) return;
  const names = [...missing].join(" ");
  if (!isRoot()) {
    throw new Error(
      `Cannot prepare QEMU guests: missing Debian packages ${names} ` +
        `(run as root to install them, or: sudo apt-get install -y ${names})`,
    );
  }
  await aptUpdate();
  await run("apt-get", ["install", "-y", "-qq", ...missing], {
    env: { DEBIAN_FRONTEND: "noninteractive" },
  });
}
