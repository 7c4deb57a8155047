/**
 * The QEMU command line of a gangway guest, built from what must match
 * between a source and its destination (the machine) and what differs
 * (the instance: name, RAM file, sockets, logs).
 *
 * @module
 */
import type { GuestImage } from "./guest_image.ts";

/**
 * A virtio disk of the guest. QEMU opens exactly the files named here: the
 * base of an overlay is given on the command line, not taken from the
 * overlay's header, so a description of the machine says every file a
 * QEMU may open.
 */
export interface QemuDisk {
  /** The file the guest writes: its own qcow2 overlay, or a raw image. */
  path: string;
  /** `qcow2` (an overlay, over `base` when given) or `raw`. */
  format: "qcow2" | "raw";
  /** The raw base image under a qcow2 overlay, opened read-only. */
  base?: string;
  /** Attach the disk read-only. Default false. */
  readOnly?: boolean;
}

/** Everything a destination must share with its source for QEMU to accept the device state. */
export interface QemuMachine {
  /** Guest RAM in MiB: the size of the memory backend. */
  memoryMiB: number;
  /** Id of the memory backend; the destination's must be the same. */
  backendId: string;
  /** Virtual CPUs. */
  cpus: number;
  /** `-accel` value, e.g. `tcg` or `kvm`. */
  accelerator: string;
  /** Kernel and initramfs (none for a guest that boots from a disk's own boot loader). */
  image?: GuestImage;
  /** The whole kernel command line, one argument per entry (with `image`). */
  kernelArgs: string[];
  /**
   * Virtio disks, in order (`/dev/vda`, `/dev/vdb`...). A migration's
   * destination on shared storage opens the same files: QEMU keeps an
   * incoming guest's disks inactive (unlocked) until it runs. Default none.
   */
  disks?: readonly QemuDisk[];
  /** More QEMU arguments (devices...), the same on both sides. */
  extraArgs: string[];
  /** The QEMU program. */
  qemuBinary: string;
  /**
   * RAM in QEMU's default anonymous memory instead of the shared file: how
   * users run guests for QEMU's own migration, which needs no file. A read
   * of an untouched page then maps the zero page instead of allocating a
   * tmpfs page. Gangway cannot move such a guest. Default false.
   */
  anonymousRam?: boolean;
}

/** What belongs to one QEMU process only. */
export interface QemuInstance {
  /** Guest name (QEMU's `-name`). */
  name: string;
  /** The memory backend's file, e.g. `/dev/shm/gangway-vm1`. */
  ramPath: string;
  /** QMP unix socket. */
  qmpPath: string;
  /** File that receives the serial console. */
  serialLog: string;
  /** Start paused and wait for `migrate-incoming` (`-S -incoming defer`). */
  incoming: boolean;
}

/**
 * The alignment of a RAM file's mapping in QEMU. By default QEMU aligns it
 * to the file's page size, 4 KiB on tmpfs (it was mapped 4 KiB below a
 * 2 MiB boundary): on a tmpfs that gives huge pages, none could back a
 * guest mapped so, and a gangway sender then paid a fault per 64 KiB on its
 * first read of each page (docs/design.md, "Huge pages").
 */
const HUGE_PAGE_ALIGN = "2M";

/** Characters allowed in names and paths put on the QEMU command line. */
const SAFE = /^[A-Za-z0-9_./+-]+$/;

/**
 * The arguments for `machine.qemuBinary` (the program itself not included).
 *
 * @throws Error when a name or path would break QEMU's option syntax
 */
export function qemuArgs(machine: QemuMachine, instance: QemuInstance): string[] {
  const disks = machine.disks ?? [];
  const named = {
    ...instance,
    backendId: machine.backendId,
    ...Object.fromEntries(disks.flatMap((disk, i) => [
      [`disk ${i}`, disk.path],
      [`disk ${i} base`, disk.base],
    ])),
  };
  for (const [what, value] of Object.entries(named)) {
    if (typeof value === "string" && !SAFE.test(value)) {
      throw new Error(
        `Cannot start guest "${instance.name}": ${what} "${value}" has unsafe characters`,
      );
    }
  }
  const size = `${machine.memoryMiB}M`;
  const anonymous = machine.anonymousRam ?? false;
  const args = [
    ["-name", `guest=${instance.name}`],
    ["-accel", machine.accelerator],
    ["-machine", anonymous ? "pc" : `pc,memory-backend=${machine.backendId}`],
    ["-m", size],
    ["-smp", String(machine.cpus)],
    // share=on: the file is the guest RAM itself, so gangway can read and write it. align: see
    // HUGE_PAGE_ALIGN.
    anonymous ? [] : [
      "-object",
      `memory-backend-file,id=${machine.backendId},size=${size},mem-path=${instance.ramPath},` +
      `share=on,align=${HUGE_PAGE_ALIGN}`,
    ],
    machine.image
      ? [
        "-kernel",
        machine.image.kernel,
        "-initrd",
        machine.image.initrd,
        "-append",
        machine.kernelArgs.join(" "),
      ]
      : [],
    // No default devices: no VGA, no monitor on stdio; the serial port goes to a file.
    ["-nodefaults", "-display", "none"],
    ["-serial", `file:${instance.serialLog}`],
    ["-qmp", `unix:${instance.qmpPath},server=on,wait=off`],
    ["-net", "none", "-no-reboot"],
    disks.flatMap((disk, i) => ["-drive", driveOption(disk, i)]),
    machine.extraArgs,
    instance.incoming ? ["-S", "-incoming", "defer"] : [],
  ];
  return args.flat();
}

/** The `-drive` id of the disk at `index`: how QMP names it (block jobs, exports). */
export function driveId(index: number): string {
  return `disk${index}`;
}

/**
 * Said of a base: its page cache stays when the guest moves. QEMU drops a
 * file's page cache (`drop-cache`, on by default) as a destination takes
 * its disks at `cont`, for a file another host may have written under this
 * one's cache; nobody writes a base (its overlays would be corrupt), and
 * dropping the cached Debian base cost the first guest of a gang 11-29 ms
 * of `cont` (27 ms for 300 MB cached, measured alone) and made every guest
 * sharing it read it from disk again. A read-only disk keeps the default:
 * another host may write it.
 */
const KEEP_PAGE_CACHE = "drop-cache=off";

/** The `-drive` value of a disk: `id=diskN`, virtio, the file, its format, its base. */
function driveOption(disk: QemuDisk, index: number): string {
  if (disk.format !== "qcow2" && disk.format !== "raw") {
    throw new Error(
      `Cannot attach disk "${disk.path}": format "${disk.format}" is not qcow2 or raw`,
    );
  }
  if (disk.base !== undefined && disk.format !== "qcow2") {
    throw new Error(`Cannot attach disk "${disk.path}": only a qcow2 overlay has a base`);
  }
  return [
    `id=${driveId(index)}`,
    "if=virtio",
    `file=${disk.path}`,
    `format=${disk.format}`,
    ...disk.base === undefined ? [] : [
      "backing.driver=raw",
      `backing.file.filename=${disk.base}`,
      `backing.file.${KEEP_PAGE_CACHE}`,
    ],
    ...disk.readOnly ? ["readonly=on"] : [],
  ].join(",");
}
