/**
 * The Debian packages the QEMU layer needs (installed by src/_debian_packages.ts).
 *
 * @module
 */
import type { Requirement } from "../_debian_packages.ts";

export { aptGet, ensurePackages, isRoot, type Requirement } from "../_debian_packages.ts";

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
