/**
 * Makes this machine ready for a gangway task: installs the Debian packages
 * the task needs (when run as root; otherwise says which to install) and
 * builds the C library when it is missing or stale.
 *
 * Usage: `deno run <permissions> tools/setup.ts NEED...` where each NEED is
 * one of the keys of {@linkcode NEEDS}.
 *
 * Requires `--allow-read`, `--allow-write` (ffi/build),
 * `--allow-sys=uid` and `--allow-run` (gcc, apt-get).
 *
 * @module
 */
import { BUILD_REQUIREMENTS, buildLibrary, type BuildRequirement } from "../ffi/build.ts";
import { errorMessage } from "../src/_errors.ts";

/** What each kind of work needs from the system. */
export const NEEDS: Record<string, readonly BuildRequirement[]> = {
  build: BUILD_REQUIREMENTS,
  bench: [{ file: "/usr/bin/xxhsum", debian: "xxhash" }],
  qemu: [
    { file: "/usr/bin/qemu-system-x86_64", debian: "qemu-system-x86" },
    { file: "/bin/busybox", debian: "busybox-static" },
  ],
  tls: [{ file: "/usr/bin/openssl", debian: "openssl" }],
  lab: [
    { file: "/usr/sbin/ip", debian: "iproute2" },
    { file: "/usr/sbin/tc", debian: "iproute2" },
  ],
};

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

async function apt(args: string[]): Promise<void> {
  const status = await new Deno.Command("apt-get", {
    args,
    env: { DEBIAN_FRONTEND: "noninteractive" },
    stdout: "inherit",
    stderr: "inherit",
  }).spawn().status;
  if (!status.success) throw new Error(`Cannot install packages: apt-get ${args.join(" ")} failed`);
}

/** Installs the missing packages of the given needs, or throws naming them. */
export async function ensurePackages(needs: string[]): Promise<void> {
  const missing = new Set<string>();
  for (const need of needs) {
    const requirements = NEEDS[need];
    if (!requirements) throw new Error(`Unknown setup need "${need}"`);
    for (const { file, debian } of requirements) {
      if (!(await exists(file))) missing.add(debian);
    }
  }
  if (missing.size === 0) return;
  const packages = [...missing];
  if (Deno.uid() !== 0) {
    throw new Error(
      `Missing Debian packages: ${packages.join(" ")}\n` +
        `Run this task as root to install them, or: sudo apt-get install -y ${packages.join(" ")}`,
    );
  }
  console.error(`Installing Debian packages: ${packages.join(" ")}`);
  await apt(["update", "-qq"]);
  await apt(["install", "-y", "-qq", ...packages]);
}

if (import.meta.main) {
  try {
    const needs = ["build", ...Deno.args];
    await ensurePackages(needs);
    await buildLibrary({ quiet: true });
  } catch (error) {
    console.error(errorMessage(error));
    Deno.exit(1);
  }
}
