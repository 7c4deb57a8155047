/**
 * The lab and test guest images, provisioned once into a cache directory:
 * `busybox` (a Debian kernel and a busybox initramfs whose `/init` runs
 * the heartbeat: boots in seconds) and the Debian images built from
 * packages (`debian`, `debian-cloud`, `debian-rt`, `debian-db`,
 * `debian-web`: systemd on an ext4 disk, the heartbeat as a unit).
 *
 * @module
 */
import { join } from "node:path";
import { ensureDebianImage } from "./_debian_image.ts";
import { DEBIAN_RECIPES, type DebianImageName } from "./_debian_recipes.ts";
import { INIT_SCRIPT, type WorkloadMode } from "./_guest_init.ts";
import { ensureInitramfs } from "./_initramfs.ts";
import { ensureKernel } from "./_kernel.ts";
import { defaultCacheDir } from "../_cache_dir.ts";
import {
  ensurePackages,
  IMAGE_REQUIREMENTS,
  OVERLAY_REQUIREMENTS,
  QEMU_REQUIREMENTS,
} from "./_packages.ts";

export type { DebianImageName };
export { defaultCacheDir };

/** The images gangway can provision. */
export type ImageName = "busybox" | DebianImageName;

/** Every image name: `busybox` first (the default), then the Debian ones. */
export const IMAGE_NAMES: readonly ImageName[] = [
  "busybox",
  ...Object.keys(DEBIAN_RECIPES) as DebianImageName[],
];

/** A bootable guest: kernel and initramfs, and for the Debian images a base disk. */
export interface GuestImage {
  /** The kernel (`vmlinuz-VERSION`). */
  kernel: string;
  /** The initramfs (`busybox`: the whole guest; Debian: the initrd that mounts the disk). */
  initrd: string;
  /** The kernel release, e.g. `6.1.0-56-amd64`. */
  kernelVersion: string;
  /** The image's name (none for a guest started by hand). */
  name?: ImageName;
  /**
   * The raw base disk the guest's root file system is on, shared read-only
   * by every guest of the image: each guest writes to its own qcow2 overlay.
   */
  disk?: string;
  /** Kernel arguments the image needs to boot (`root=/dev/vda rw` for a disk). */
  kernelArgs?: readonly string[];
  /** The workloads the image's programs can run. Default idle and busy. */
  workloads?: readonly WorkloadMode[];
}

/** Options of {@linkcode ensureGuestImage}. */
export interface GuestImageOptions {
  /** Which image. Default `busybox`. */
  name?: ImageName;
  /** Cache directory. Default: {@linkcode defaultCacheDir}. */
  cacheDir?: string;
  /** A statically linked busybox to put in the initramfs. Default `/bin/busybox`. */
  busybox?: string;
  /** Progress of a build (a Debian image takes a minute or two). Default: nowhere. */
  onProgress?: (line: string) => void;
}

/** What the workloads of an image are: the busybox image and every Debian one run idle and busy. */
export function imageWorkloads(name: ImageName): readonly WorkloadMode[] {
  return name === "busybox" ? ["idle", "busy"] : DEBIAN_RECIPES[name].workloads;
}

/** Kernel arguments of a guest whose root file system is its first virtio disk. */
const DISK_ROOT_ARGS = ["root=/dev/vda", "rw", "quiet"];

/**
 * Returns a guest image, building what is missing (installing the Debian
 * packages it needs when root, else naming them in the error):
 *
 * - `busybox`: the Debian 6.1 kernel (downloaded with `apt-get download`)
 *   and the initramfs (busybox + the heartbeat `/init`, named by a hash of
 *   both);
 * - a Debian image: built with `mmdebstrap` from the package archive (as
 *   root, a minute or two, progress through `onProgress`) into
 *   `NAME-HASH/` of the cache, HASH covering its whole recipe: kernel,
 *   initrd and a raw ext4 base disk.
 *
 * Safe to run concurrently: files are written under temporary names and
 * renamed into place.
 *
 * Requires `--allow-read`, `--allow-write` (the cache), `--allow-env`,
 * `--allow-sys=uid` and `--allow-run` (apt-get, apt-cache, dpkg-deb, tar;
 * mmdebstrap, mkfs.ext4, du, dpkg-query for a Debian image).
 *
 * @example
 * ```ts
 * const image = await ensureGuestImage({ name: "debian", onProgress: console.error });
 * console.log(image.kernel, image.initrd, image.disk);
 * ```
 */
export async function ensureGuestImage(options: GuestImageOptions = {}): Promise<GuestImage> {
  const name = options.name ?? "busybox";
  const dir = join(options.cacheDir ?? defaultCacheDir(), "guest");
  await Deno.mkdir(dir, { recursive: true });
  // QEMU is checked here too: an image is only ever built to be booted.
  if (name !== "busybox") {
    await ensurePackages([...QEMU_REQUIREMENTS, ...OVERLAY_REQUIREMENTS], "prepare QEMU guests");
    const built = await ensureDebianImage(
      dir,
      DEBIAN_RECIPES[name],
      options.onProgress ?? (() => {}),
    );
    return {
      ...built,
      name,
      kernelArgs: DISK_ROOT_ARGS,
      workloads: DEBIAN_RECIPES[name].workloads,
    };
  }
  await ensurePackages(
    options.busybox === undefined
      ? [...QEMU_REQUIREMENTS, ...IMAGE_REQUIREMENTS]
      : QEMU_REQUIREMENTS,
    "prepare QEMU guests",
  );
  const initrd = await ensureInitramfs(dir, options.busybox ?? "/bin/busybox", INIT_SCRIPT);
  const { kernel, kernelVersion } = await ensureKernel(dir);
  return { kernel, initrd, kernelVersion, name, workloads: imageWorkloads(name) };
}
