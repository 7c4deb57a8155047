/**
 * The memory a lab run needs, estimated before anything boots, so that a
 * run that cannot fit is refused with a clear message instead of letting
 * the kernel's OOM killer pick QEMUs halfway; and the OOM killer's counter,
 * to say afterwards whether it killed anything.
 *
 * The estimate is a model of what was measured on the lab's test guest
 * (QEMU 7.2 under TCG, Debian's 6.1 kernel, busybox initramfs):
 * - a QEMU process costs about 75 MiB besides its guest's RAM (TCG's
 *   translated code, device models), a waiting destination about 45 MiB;
 * - an idle guest touches about 112 MiB of 256 MiB and 138 MiB of 512 MiB;
 *   the pages it never touched stay holes in a RAM file, or unmapped in
 *   anonymous RAM;
 * - QEMU's own migration reads every page: a read of a hole in a shared
 *   tmpfs file allocates it, so with the file backend both ends of a QEMU
 *   migration grow to the guest's whole size (512 MiB guest: 609 MiB and
 *   561 MiB resident afterwards); with anonymous RAM a read maps the zero
 *   page and each end keeps what the guest touched (235 and 170 MiB),
 *   unless the kernel backs it with transparent huge pages (QEMU advises
 *   them for its RAM): then each end grows in 2 MiB pieces to about the
 *   whole guest (24 idle guests of 512 MiB, 235 MiB each after boot, held
 *   390-590 MiB at both ends halfway through QEMU's migration, and the
 *   kernel's OOM killer ended it on a host of 24 GiB);
 * - gangway reads the source's RAM file with pread (holes stay holes) and
 *   writes only the pages that hold data at the target; its sender and
 *   receiver are two Deno processes with a page index each. Its source
 *   guests' files on a tmpfs of huge pages (huge_tmpfs.ts) grow in 2 MiB
 *   pieces, as QEMU's anonymous RAM does, to about their whole size.
 *
 * @module
 */
import type { WorkloadMode } from "../qemu/_guest_init.ts";
import type { GuestRam, LabMethod } from "./measurement.ts";
import { runTool } from "./netns_exec.ts";

/** What the estimate needs to know of a run. */
export interface MemoryPlan {
  /** Guests in the gang. */
  guests: number;
  /** RAM of each guest in MiB. */
  memoryMiB: number;
  /** Any workload but "idle" touches more of the guests' RAM. */
  workload: WorkloadMode;
  /** The methods, run one after another. */
  methods: readonly LabMethod[];
  /** The QEMU methods' RAM backend. */
  baselineRam: GuestRam;
  /**
   * Whether the host backs QEMU's anonymous RAM with transparent huge pages
   * (see {@linkcode anonymousHugePages}). Default false.
   */
  hugePages?: boolean;
  /**
   * Whether guests that keep their RAM in files (gangway's, QEMU's with
   * `baselineRam` "file") keep them on a tmpfs of huge pages at the source
   * (huge_tmpfs.ts). Default false.
   */
  hugePageFiles?: boolean;
}

/** What one method needs at its peak, both hosts together. */
export interface MethodNeed {
  /** The method. */
  method: LabMethod;
  /** Bytes at its peak (every source and every destination alive). */
  bytes: number;
  /** Where its guests keep their RAM: gangway always in files. */
  ram: GuestRam;
  /** Why, in words. */
  how: string;
}

/** The estimate of a run: the methods run one after another, so the largest counts. */
export interface MemoryEstimate {
  /** Each method's need. */
  methods: MethodNeed[];
  /** The largest of them. */
  peak: MethodNeed;
  /** Whether QEMU's anonymous RAM was counted as huge pages (see {@linkcode anonymousHugePages}). */
  hugePages: boolean;
  /** Whether RAM files were counted on a tmpfs of huge pages at the source. */
  hugePageFiles: boolean;
}

const MIB = 2 ** 20;
/** A QEMU process besides its guest's RAM (measured 72-80 MiB anonymous for a TCG guest; rounded up). */
const QEMU_OVERHEAD_MIB = 96;
/** What an idle test guest touches: a fixed part (kernel, initramfs, random blob)... */
const TOUCHED_BASE_MIB = 96;
/** ...and a share of its size (the kernel's page structures and caches). */
const TOUCHED_SHARE = 1 / 12;
/** A busy guest's rewriting touches more (its 8 MiB scratch, the page cache around it). */
const BUSY_EXTRA_MIB = 64;
/** Gangway's sender and receiver processes and their page indexes, for a whole gang. */
const GANGWAY_PROCESSES_MIB = 768;
/** Their page indexes grow with the gang: bytes per guest page (4 KiB), both sides. */
const GANGWAY_INDEX_BYTES_PER_PAGE = 64;
/** Kept free for the lab's own process, page cache and the rest of the host. */
export const MEMORY_HEADROOM_BYTES = 1024 * MIB;

/**
 * Bytes to make ready just before a migration (warm_memory.ts): what the
 * source guests' QEMU processes hold in memory (the target writes about as
 * much: each page with data, and its own QEMUs), and a quarter more,
 * within what is available beyond the headroom.
 *
 * Requires `--allow-run` (cat).
 *
 * @param pids the source guests' QEMU processes
 */
export async function memoryToWarm(pids: readonly number[]): Promise<number> {
  const held = await residentBytes(pids);
  const spare = (await availableMemory()) - MEMORY_HEADROOM_BYTES;
  return Math.round(Math.max(0, Math.min(1.25 * held, spare)));
}

/**
 * The memory processes hold (their `VmRSS` summed); a process that is gone,
 * or whose status cannot be read, counts nothing.
 *
 * Requires `--allow-run` (cat).
 */
export function residentBytes(pids: readonly number[]): Promise<number> {
  return sumOfKilobytes(pids, "status", /^VmRSS:\s+(\d+) kB$/gm);
}

/**
 * The memory of processes mapped in huge pages: their anonymous RAM's
 * (`AnonHugePages`) and their shared or file mappings' (`ShmemPmdMapped`,
 * `FilePmdMapped`) of /proc/PID/smaps_rollup, summed; a process that is
 * gone, or whose figures cannot be read, counts nothing.
 *
 * Requires `--allow-run` (cat).
 */
export function hugePageBytes(pids: readonly number[]): Promise<number> {
  return sumOfKilobytes(
    pids,
    "smaps_rollup",
    /^(?:AnonHugePages|ShmemPmdMapped|FilePmdMapped):\s+(\d+) kB$/gm,
  );
}

/**
 * Bytes of the "N kB" figures that `lines` (global, multiline) matches in
 * /proc/PID/`file` of each process, summed over them all (read with `cat`:
 * Deno asks for --allow-all under /proc); a process that is gone, or whose
 * file cannot be read, counts nothing.
 */
async function sumOfKilobytes(
  pids: readonly number[],
  file: string,
  lines: RegExp,
): Promise<number> {
  const each = await Promise.all(pids.map(async (pid) => {
    try {
      const text = await runTool("cat", [`/proc/${pid}/${file}`]);
      return [...text.matchAll(lines)].reduce((sum, match) => sum + Number(match[1]) * 1024, 0);
    } catch {
      return 0;
    }
  }));
  return each.reduce((sum, bytes) => sum + bytes, 0);
}

/**
 * Estimates the memory of a run at its peak, method by method.
 *
 * Needs no permission.
 *
 * @param plan The gang, the methods and the baselines' RAM backend
 * @returns Each method's need and the largest
 *
 * @example
 * ```ts
 * const estimate = estimateMemory({ guests: 24, memoryMiB: 512, workload: "idle", methods: ["gangway", "qemu"], baselineRam: "anonymous" });
 * console.log(estimate.peak.bytes / 2 ** 30); // about 12 GiB
 * ```
 */
export function estimateMemory(plan: MemoryPlan): MemoryEstimate {
  const size = plan.memoryMiB;
  const touched = Math.min(
    size,
    TOUCHED_BASE_MIB + size * TOUCHED_SHARE + (plan.workload === "idle" ? 0 : BUSY_EXTRA_MIB),
  );
  const n = plan.guests;
  const each = (mib: number) => Math.round(n * (QEMU_OVERHEAD_MIB + mib) * MIB);
  const methods = plan.methods.map((method): MethodNeed => {
    if (method === "gangway") {
      const index = 2 * n * (size * MIB / 4096) * GANGWAY_INDEX_BYTES_PER_PAGE;
      const source = plan.hugePageFiles ? size : touched;
      return {
        method,
        bytes: Math.round(each(source) + each(touched) + GANGWAY_PROCESSES_MIB * MIB + index),
        ram: "file",
        how: plan.hugePageFiles
          ? `${n} guests of ${size} MiB in files of huge pages at the source, touching about ` +
            `${Math.round(touched)} MiB at the target, and the sender and receiver`
          : `${n} guests touching about ${Math.round(touched)} MiB, on both hosts, ` +
            "and the sender and receiver",
      };
    }
    if (plan.baselineRam === "file") {
      return {
        method,
        bytes: 2 * each(size),
        ram: "file",
        how: `${n} guests of ${size} MiB in shared files, whole on both hosts since ` +
          "QEMU's migration reads every page and a read allocates a file's page",
      };
    }
    if (plan.hugePages) {
      return {
        method,
        bytes: 2 * each(size),
        ram: "anonymous",
        how: `${n} guests of ${size} MiB in anonymous RAM of transparent huge pages, about ` +
          "whole on both hosts once QEMU's migration runs",
      };
    }
    return {
      method,
      bytes: 2 * each(touched),
      ram: "anonymous",
      how: `${n} guests touching about ${Math.round(touched)} MiB of anonymous RAM, on both hosts`,
    };
  });
  const peak = methods.reduce((a, b) => (b.bytes > a.bytes ? b : a));
  return {
    methods,
    peak,
    hugePages: plan.hugePages ?? false,
    hugePageFiles: plan.hugePageFiles ?? false,
  };
}

/**
 * Refuses a run whose estimate does not fit in the memory available, less
 * {@linkcode MEMORY_HEADROOM_BYTES}.
 *
 * Needs no permission.
 *
 * @param estimate The run's estimate
 * @param availableBytes The host's available memory (`MemAvailable`)
 * @param what The run, in words, for the message ("24 guests of 512 MiB")
 * @throws Error saying what the run needs, what is available, and what to change
 */
export function refuseUnlessFits(
  estimate: MemoryEstimate,
  availableBytes: number,
  what: string,
): void {
  const { peak } = estimate;
  const fits = (need: MethodNeed) => fitsIn(need, availableBytes);
  if (fits(peak)) return;
  const compared = estimate.methods.filter((need) => need.method !== "gangway");
  const over = compared.filter((need) => !fits(need)).map((need) => need.method);
  const left = compared.filter(fits).map((need) => need.method);
  // Anonymous RAM of small pages keeps what the guests touched; of huge pages, no less than files.
  const hint = peak.method === "gangway"
    ? ""
    : peak.ram === "file" && !estimate.hugePages
    ? ", or let the QEMU methods keep QEMU's default anonymous RAM (drop --baseline-ram file)"
    : `, or leave ${over.join(" and ")} out (--compare ${left.join(",") || "none"})`;
  throw new Error(
    `Cannot run the lab with ${what}: ${peak.method} needs about ${gib(peak.bytes)} GiB ` +
      `at its peak (${peak.how}), ${gib(availableBytes)} GiB is available and ` +
      `${gib(MEMORY_HEADROOM_BYTES)} GiB of it is kept free; run fewer or smaller guests${hint}`,
  );
}

/** Whether a method's need fits in the memory available, less {@linkcode MEMORY_HEADROOM_BYTES}. */
export function fitsIn(need: MethodNeed, availableBytes: number): boolean {
  return need.bytes + MEMORY_HEADROOM_BYTES <= availableBytes;
}

/**
 * The memory the kernel says is available for new work (`MemAvailable` of
 * /proc/meminfo, read with `cat`: Deno asks for --allow-all under /proc).
 *
 * Requires `--allow-run` (cat).
 *
 * @returns Bytes
 * @throws Error when /proc/meminfo cannot be read
 */
export async function availableMemory(): Promise<number> {
  const text = await runTool("cat", ["/proc/meminfo"]);
  const kib = /^MemAvailable:\s+(\d+) kB$/m.exec(text)?.[1];
  if (kib === undefined) throw new Error("Cannot read the available memory: no MemAvailable");
  return Number(kib) * 1024;
}

/** What the host has for a run: the memory available, and how QEMU's anonymous RAM is backed. */
export interface HostMemory {
  /** `MemAvailable` (see {@linkcode availableMemory}). */
  availableBytes: number;
  /** See {@linkcode anonymousHugePages}. */
  hugePages: boolean;
}

/**
 * What the host has for a run now.
 *
 * Requires `--allow-run` (cat).
 *
 * @throws Error when /proc/meminfo cannot be read
 */
export async function hostMemory(): Promise<HostMemory> {
  return { availableBytes: await availableMemory(), hugePages: await anonymousHugePages() };
}

/** Where the kernel keeps its settings of transparent huge pages. */
const THP_DIR = "/sys/kernel/mm/transparent_hugepage";

/**
 * Whether the kernel backs QEMU's anonymous guest RAM with transparent huge
 * pages: the setting of their 2 MiB size (or the global one it inherits) is
 * `always`, or `madvise` (QEMU advises them for its RAM). False when the
 * kernel has none, or the setting cannot be read.
 *
 * Requires `--allow-run` (cat).
 */
export async function anonymousHugePages(): Promise<boolean> {
  const setting = async (path: string) => {
    try {
      return /\[(\w+)\]/.exec(await runTool("cat", [`${THP_DIR}/${path}`]))?.[1];
    } catch {
      return undefined; // no such setting: a kernel without them, or older than the sizes' own
    }
  };
  // Since Linux 6.8 the 2 MiB size has a setting of its own, which may defer to the global one.
  const own = await setting("hugepages-2048kB/enabled");
  const used = own === undefined || own === "inherit" ? await setting("enabled") : own;
  return used === "always" || used === "madvise";
}

/**
 * How many processes the kernel's OOM killer has killed since boot (the
 * `oom_kill` counter of /proc/vmstat); null when it cannot be read.
 *
 * Requires `--allow-run` (cat).
 */
export async function oomKillCount(): Promise<number | null> {
  try {
    const text = await runTool("cat", ["/proc/vmstat"]);
    const count = /^oom_kill (\d+)$/m.exec(text)?.[1];
    return count === undefined ? null : Number(count);
  } catch {
    return null;
  }
}

/** Bytes in GiB, to a tenth (the lab's messages on memory). */
export function gib(bytes: number): string {
  return (bytes / 2 ** 30).toFixed(1);
}
