/**
 * Which pages a round must look at again. Without help from the kernel
 * every page is re-read and re-hashed, and the hash says whether it
 * changed (this machine's kernel has no soft-dirty bits). Where the kernel
 * has them, only pages written since the tracking started are re-read.
 *
 * Soft-dirty bits are never cleared between rounds: reading the bits and
 * clearing them are two system calls, and a page written between the two
 * would be lost. Pages written once stay in every later round's set; their
 * hash still tells whether they changed again.
 *
 * @module
 */
import {
  clearSoftDirty,
  PagemapFlag,
  readPageFlags,
  softDirtySupported,
} from "../native/pagemap.ts";
import { PAGE_SIZE } from "../native/ram_file.ts";

/** Chooses the pages each round re-reads. */
export interface DirtyTracker {
  /** "rescan" or "soft-dirty", for reports. */
  readonly kind: "rescan" | "soft-dirty";
  /** Starts tracking; called before the first page is read (the preparation scan, or round 1). */
  start(): void;
  /**
   * One byte a page of the guest: 1 = may have changed since `start()`;
   * undefined = look at every page.
   */
  changed(guest: number): Uint8Array | undefined;
}

/** The fallback: every round re-reads and re-hashes every page. */
export const rescanEverything: DirtyTracker = {
  kind: "rescan",
  start() {},
  changed: () => undefined,
};

/** Where a guest's RAM is mapped in the process that writes it (QEMU). */
export interface MappedRam {
  /** The writing process. */
  pid: number;
  /** Start address of the RAM file's mapping in that process. */
  address: bigint;
  /** Pages of the guest. */
  pages: number;
}

/**
 * Soft-dirty tracking of guests whose RAM a process writes through a
 * mapping (QEMU's vCPUs and devices do).
 *
 * Requires `--allow-ffi` (and root, or ptrace access to the processes).
 */
export class SoftDirtyTracker implements DirtyTracker {
  /** Named in reports: the kernel's soft-dirty bits choose the pages. */
  readonly kind = "soft-dirty";
  readonly #guests: readonly MappedRam[];

  /**
   * Tracks the given guests' RAM through their QEMU processes' mappings.
   *
   * @throws Error when the kernel has no soft-dirty tracking
   */
  constructor(guests: readonly MappedRam[]) {
    if (!softDirtySupported()) {
      throw new Error(
        "Cannot track dirty pages with soft-dirty bits: this kernel lacks CONFIG_MEM_SOFT_DIRTY",
      );
    }
    this.#guests = guests;
  }

  start(): void {
    for (const pid of new Set(this.#guests.map((g) => g.pid))) clearSoftDirty(pid);
  }

  changed(guest: number): Uint8Array {
    const { pid, address, pages } = this.#guests[guest]!;
    const flags = readPageFlags(pid, address, pages, { want: PagemapFlag.SoftDirty });
    return flags.map((f) => (f & PagemapFlag.SoftDirty ? 1 : 0));
  }
}

/**
 * The start address of a file's mapping in a process, from
 * /proc/PID/maps (read with `cat`: Deno may not read /proc without
 * --allow-all). Requires `--allow-run`.
 *
 * @throws Error when the process does not map the file from offset 0
 */
export async function mappingAddress(pid: number, path: string): Promise<bigint> {
  const output = await new Deno.Command("cat", {
    args: [`/proc/${pid}/maps`],
    stdout: "piped",
    stderr: "null",
  })
    .output();
  for (const line of new TextDecoder().decode(output.stdout).split("\n")) {
    // "7f00000000-7f08000000 rw-s 00000000 00:1a 1234   /dev/shm/gangway-vm1"
    const [range, , offset, , , file] = line.split(/\s+/);
    if (file === path && offset && BigInt(`0x${offset}`) === 0n) {
      return BigInt(`0x${range!.split("-")[0]}`);
    }
  }
  throw new Error(`Cannot find the mapping of "${path}" in process ${pid}`);
}

/** Bytes to pages, for callers building {@linkcode MappedRam}. */
export function pagesOf(bytes: number): number {
  return Math.ceil(bytes / PAGE_SIZE);
}
