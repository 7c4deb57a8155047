/**
 * The lab and test guest image: a Debian kernel and a busybox initramfs
 * whose `/init` runs a heartbeat workload, provisioned once into a cache
 * directory.
 *
 * @module
 */
import { join } from "node:path";
import { INIT_SCRIPT } from "./_guest_init.ts";
import { ensureInitramfs } from "./_initramfs.ts";
import { ensureKernel } from "./_kernel.ts";
import { ensurePackages, IMAGE_REQUIREMENTS, QEMU_REQUIREMENTS } from "./_packages.ts";

/** A bootable guest: kernel and initramfs paths. */
export interface GuestImage {
  /** The kernel (`vmlinuz-VERSION`). */
  kernel: string;
  /** The initramfs (uncompressed newc cpio). */
  initrd: string;
  /** The kernel release, e.g. `6.1.0-56-amd64`. */
  kernelVersion: string;
}

/** Options of {@linkcode ensureGuestImage}. */
export interface GuestImageOptions {
  /** Cache directory. Default: {@linkcode defaultCacheDir}. */
  cacheDir?: string;
  /** A statically linked busybox to put in the initramfs. Default `/bin/busybox`. */
  busybox?: string;
}

/**
 * The cache directory: `$GANGWAY_CACHE`, else `$XDG_CACHE_HOME/gangway`,
 * else `~/.cache/gangway`.
 *
 * Requires `--allow-env`.
 */
export function defaultCacheDir(): string {
  const override = Deno.env.get("GANGWAY_CACHE");
  if (override) return override;
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  if (xdg) return join(xdg, "gangway");
  const home = Deno.env.get("HOME");
  if (!home) throw new Error("Cannot find a cache directory: set GANGWAY_CACHE or HOME");
  return join(home, ".cache", "gangway");
}

/**
 * Returns the guest image, building what is missing: the Debian packages
 * (qemu-system-x86, busybox-static; installed when root, else named in the
 * error), the Debian 6.1 kernel
 * (downloaded with `apt-get download`) and the initramfs (busybox + the
 * heartbeat `/init`, named by a hash of both). Safe to run concurrently:
 * files are written under temporary names and renamed into place.
 *
 * Requires `--allow-read`, `--allow-write` (the cache), `--allow-env`,
 * `--allow-sys=uid` and `--allow-run` (apt-get, apt-cache, dpkg-deb, tar).
 *
 * @example
 * ```ts
 * const image = await ensureGuestImage();
 * console.log(image.kernel, image.initrd);
 * ```
 */
export async function ensureGuestImage(options: GuestImageOptions = {}): Promise<GuestImage> {
  const dir = join(options.cacheDir ?? defaultCacheDir(), "guest");
  await Deno.mkdir(dir, { recursive: true });
  // QEMU is checked here too: an image is only ever built to be booted.
  await ensurePackages(
    options.busybox === undefined
      ? [...QEMU_REQUIREMENTS, ...IMAGE_REQUIREMENTS]
      : QEMU_REQUIREMENTS,
  );
  const initrd = await ensureInitramfs(dir, options.busybox ?? "/bin/busybox", INIT_SCRIPT);
  const { kernel, kernelVersion } = await ensureKernel(dir);
  return { kernel, initrd, kernelVersion };
}
