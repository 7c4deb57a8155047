/**
 * One lab experiment: the same gang, booted afresh for each method (same
 * image, same size, same workload, same idle time), migrated over the same
 * link by gangway and by each QEMU method compared, each guest checked at
 * the target (each method's run: `measure_method.ts`); what it runs, its
 * defaults, the memory it needs, and what it measured.
 *
 * @module
 */
import { basename } from "node:path";
import type { GangSpec } from "./gang_spec.ts";
export type { DiskStorage } from "./gangway_method.ts";
import type { DiskStorage } from "./gangway_method.ts";
import type { GuestRam, LabMethod, MethodResult } from "./measurement.ts";
import {
  estimateMemory,
  fitsIn,
  gib,
  type HostMemory,
  hostMemory,
  type MemoryEstimate,
  type MemoryPlan,
  refuseUnlessFits,
} from "./memory_budget.ts";
import { measureMethod, OomKilledDuring } from "./measure_method.ts";
import { pendingSignal } from "./netns_signal.ts";
import { delay } from "../_delay.ts";
import { errorMessage } from "../_errors.ts";
import type { LabSession } from "./session.ts";
import type { CompressionMode } from "../transfer/compression_policy.ts";
import type { FinalRounds } from "../gang_migration.ts";
import type { ThrottleSteps } from "../plan/convergence.ts";

/** How long a failed method's end waits for a signal that may have caused it to be heard. */
const SIGNAL_SETTLE_MS = 500;

/** A QEMU method gangway is compared with. */
export type ComparedMethod = Exclude<LabMethod, "gangway">;

/** What one experiment runs. */
export interface LabConfig extends GangSpec {
  /** The QEMU methods to compare gangway with, in order; the first is the ratios' base. */
  compare: ComparedMethod[];
  /** Gangway over plain TCP instead of TLS. Default false. */
  insecure?: boolean;
  /** Gangway's compression of page data. Default "auto", the engine's default. */
  gangwayCompression?: CompressionMode;
  /**
   * How gangway ends the gang (see `QemuGangOptions.finalRounds`). Default
   * the engine's: "per-guest", or "gang" with copied disks.
   */
  gangwayFinalRounds?: FinalRounds;
  /** Where the compared QEMU methods' guests keep their RAM. Default "anonymous", QEMU's default. */
  baselineRam?: GuestRam;
  /**
   * Gangway's guests' disks: on storage both hosts see, or copied to host B
   * while the RAM moves (the QEMU methods' disks stay shared). Default "shared".
   */
  storage?: DiskStorage;
  /**
   * Auto-converge for every method, by the same steps: the share of the
   * guests' CPU time held back while the rounds do not converge (gangway's
   * throttle; QEMU's `auto-converge` with `cpu-throttle-initial`,
   * `cpu-throttle-increment` and `max-cpu-throttle`). Default: off.
   */
  throttle?: ThrottleSteps;
}

/** What one experiment measured. */
export interface LabResult {
  /** What was run. */
  config: LabConfig;
  /** The link rate asked for. */
  link: string;
  /** The two hosts as they were made. */
  network: { mode: "netns" | "loopback"; description: string; reason: string };
  /**
   * The guest images: their names in the order they are cycled across the
   * guests, and their kernels and initramfs files (comma-separated when
   * the images differ).
   */
  image: { kernel: string; initramfs: string; names?: string[] };
  /** The memory the run was estimated to need at its peak, and what was available before it. */
  memory: {
    estimatedPeakBytes: number;
    peakMethod: LabMethod;
    availableBytes: number;
    /** Whether QEMU's anonymous RAM counted as huge pages (absent in results made before it). */
    hugePages?: boolean;
    /**
     * Whether RAM files were to be on a tmpfs of huge pages at the source,
     * the run fitting so (each method's `hugePages` says whether its guests
     * had them).
     */
    hugePageFiles?: boolean;
  };
  /** Gangway first, then the compared methods in order (those that completed). */
  methods: MethodResult[];
  /**
   * Compared methods that did not complete, and why (QEMU's migration of
   * busy guests over a slow link may never converge): absent when none.
   */
  failed?: {
    method: ComparedMethod;
    error: string;
    /** Processes the kernel's OOM killer killed while it ran, if any. */
    oomKills?: number;
  }[];
  /** When it started (ISO 8601). */
  startedAt: string;
  /** How long it took, boots included. */
  seconds: number;
}

/** The defaults of `deno task lab`: 4 idle guests of 256 MiB against QEMU's default migration. */
export const DEFAULT_LAB_CONFIG: Readonly<LabConfig> = {
  guests: 4,
  memoryMiB: 256,
  idleSeconds: 10,
  workload: "idle",
  kernelArgs: [],
  images: ["busybox"],
  compare: ["qemu", "qemu-zstd"],
  insecure: false,
  gangwayCompression: "auto",
  gangwayFinalRounds: "per-guest",
  baselineRam: "anonymous",
  storage: "shared",
  accelerator: "tcg",
};

/**
 * How gangway ends the gang in an experiment: as asked, else the engine's
 * default (guest by guest, but as a gang when disks are copied).
 */
export function finalRoundsOf(
  config: Pick<LabConfig, "gangwayFinalRounds" | "storage">,
): FinalRounds {
  return config.gangwayFinalRounds ?? (config.storage === "copy" ? "gang" : "per-guest");
}

/**
 * Runs one experiment: gangway, then each compared method, on fresh gangs
 * of the same spec over the same link.
 *
 * Requires what {@linkcode measureMethod} requires.
 *
 * @param session The lab session
 * @param config The gang and the methods compared
 * @returns Every method's measurement
 * @throws Error when any method fails
 *
 * @example
 * ```ts
 * import { DEFAULT_LAB_CONFIG, runLab } from "./experiment.ts";
 * import { LabSession } from "./session.ts";
 * import { formatSummary } from "./summary.ts";
 *
 * await using lab = await LabSession.open();
 * const result = await runLab(lab, DEFAULT_LAB_CONFIG);
 * console.log(formatSummary(result));
 * ```
 */
export async function runLab(session: LabSession, config: LabConfig): Promise<LabResult> {
  const startedAt = new Date();
  const t0 = performance.now();
  const host = await hostMemory();
  const estimate = refuseUnlessLabFits(config, host);
  const { peak } = estimate;
  session.say(
    `memory: about ${gib(peak.bytes)} GiB at the peak (${peak.method}), ${
      gib(host.availableBytes)
    } GiB available${
      estimate.hugePageFiles || !host.hugePages
        ? ""
        : "; guest RAM files in 4 KiB pages: huge ones do not fit"
    }`,
  );
  const methods: MethodResult[] = [];
  const failed: NonNullable<LabResult["failed"]> = [];
  for (const method of ["gangway", ...config.compare] as const) {
    try {
      methods.push(
        await measureMethod(session, method, config, {
          insecure: config.insecure,
          compression: config.gangwayCompression,
          finalRounds: finalRoundsOf(config),
          baselineRam: config.baselineRam,
          storage: config.storage,
          throttle: config.throttle,
          hugePageFiles: estimate.hugePageFiles,
        }),
      );
    } catch (error) {
      // Gangway's failure ends the run; a compared method's is part of what was measured...
      if (method === "gangway") throw error;
      // ...unless the run is interrupted. Ctrl-C reaches the lab's children too (one process
      // group), and their end may be seen before the lab's own signal listener has run: give it
      // a moment before judging.
      await delay(SIGNAL_SETTLE_MS);
      if (pendingSignal() !== null) throw error;
      session.say(`${method}: did not complete: ${errorMessage(error)}`);
      failed.push({
        method,
        error: errorMessage(error),
        ...(error instanceof OomKilledDuring ? { oomKills: error.oomKills } : {}),
      });
    }
  }
  const net = session.network;
  return {
    config: {
      ...config,
      kernelArgs: [...config.kernelArgs],
      images: [...config.images ?? ["busybox"]],
      compare: [...config.compare],
      insecure: config.insecure ?? false,
      gangwayCompression: config.gangwayCompression ?? "auto",
      gangwayFinalRounds: finalRoundsOf(config),
      baselineRam: config.baselineRam ?? "anonymous",
      storage: config.storage ?? "shared",
    },
    link: session.link,
    network: { mode: net.mode, description: net.describe(), reason: net.reason },
    image: await imageFiles(session, config),
    memory: {
      estimatedPeakBytes: peak.bytes,
      peakMethod: peak.method,
      availableBytes: host.availableBytes,
      hugePages: host.hugePages,
      hugePageFiles: estimate.hugePageFiles,
    },
    methods,
    ...(failed.length > 0 ? { failed } : {}),
    startedAt: startedAt.toISOString(),
    seconds: Math.round(performance.now() - t0) / 1000,
  };
}

/** The images of a run, for the report: names, kernels and initramfs files. */
async function imageFiles(session: LabSession, spec: GangSpec): Promise<LabResult["image"]> {
  const names = spec.images ?? ["busybox"];
  const images = await Promise.all(names.map((name) => session.guestImage(name)));
  const files = (pick: (image: (typeof images)[number]) => string) =>
    [...new Set(images.map((image) => basename(pick(image))))].join(", ");
  return { kernel: files((i) => i.kernel), initramfs: files((i) => i.initrd), names };
}

/**
 * Estimates the memory an experiment needs at its peak (its methods run
 * one after another) and refuses it when that does not fit.
 *
 * Needs no permission.
 *
 * @param config The experiment
 * @param host The memory available now, and how QEMU's RAM is backed (see `hostMemory`)
 * @returns The estimate, when it fits
 * @throws Error saying what it needs and what is available
 *
 * @example
 * ```ts
 * import { DEFAULT_LAB_CONFIG, refuseUnlessLabFits } from "./experiment.ts";
 * import { hostMemory } from "./memory_budget.ts";
 *
 * refuseUnlessLabFits({ ...DEFAULT_LAB_CONFIG, guests: 24, memoryMiB: 512 }, await hostMemory());
 * ```
 */
export function refuseUnlessLabFits(config: LabConfig, host: HostMemory): MemoryEstimate {
  const plan: MemoryPlan = {
    guests: config.guests,
    memoryMiB: config.memoryMiB,
    workload: config.workload,
    methods: ["gangway", ...config.compare],
    baselineRam: config.baselineRam ?? "anonymous",
    hugePages: host.hugePages,
  };
  // Where QEMU's anonymous RAM gets huge pages, RAM files get them too (huge_tmpfs.ts), if the run
  // fits so; else they are in 4 KiB ones.
  if (host.hugePages) {
    const huge = estimateMemory({ ...plan, hugePageFiles: true });
    if (fitsIn(huge.peak, host.availableBytes)) return huge;
  }
  const estimate = estimateMemory(plan);
  refuseUnlessFits(
    estimate,
    host.availableBytes,
    `${config.guests} guests of ${config.memoryMiB} MiB`,
  );
  return estimate;
}
