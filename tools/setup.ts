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
import { ensurePackages } from "../src/_debian_packages.ts";

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

/** Installs the missing packages of the given needs, or throws naming them. */
export async function ensureNeeds(needs: string[]): Promise<void> {
  await ensurePackages(
    needs.flatMap((need) => {
      const requirements = NEEDS[need];
      if (!requirements) throw new Error(`Unknown setup need "${need}"`);
      return requirements;
    }),
    `run this task (${needs.join(", ")})`,
  );
}

if (import.meta.main) {
  try {
    const needs = ["build", ...Deno.args];
    await ensureNeeds(needs);
    await buildLibrary({ quiet: true });
  } catch (error) {
    console.error(errorMessage(error));
    Deno.exit(1);
  }
}
