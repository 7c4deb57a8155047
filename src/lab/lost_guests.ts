/**
 * Guests a method lost (migrated, but not alive and intact at the
 * target), why, and what the run's exit status makes of them: a guest
 * gangway lost fails the run; one a QEMU baseline lost is a warning,
 * pointed at QEMU's own known bug when it applies. Pure functions: no
 * permissions needed.
 *
 * @module
 */
import type { LabResult } from "./experiment.ts";
import type { GangSpec } from "./gang_spec.ts";
import type { LabMethod, MethodResult } from "./measurement.ts";

/** A guest that did not go on at the target, and why. */
export interface LostGuest {
  /** The guest. */
  name: string;
  /** What was seen, in words. */
  reason: string;
  /** The first lines of its kernel's crash report, when it crashed. */
  kernelCrash?: string[];
}

/** Per method, over many runs: how many guests it migrated and how many it lost. */
export interface LostTotals {
  /** The method. */
  method: LabMethod;
  /** Runs it was measured in. */
  runs: number;
  /** Guests it migrated (every guest of every run). */
  migrated: number;
  /** Of those, guests that did not go on intact at the target. */
  lost: number;
  /** Of those lost, guests whose kernel crashed. */
  crashed: number;
}

/** The upstream fix of QEMU's dirty tracking under TCG, and the version it is in. */
export const QEMU_TCG_DIRTY_FIX = {
  commit: "03bfc2188f",
  title: "physmem: Fix migration dirty bitmap coherency with TCG memory access",
  fixedIn: 9,
} as const;

/**
 * The guests a method lost, with the reason.
 *
 * @param m A method's measurement
 * @returns Its lost guests, in gang order
 */
export function lostGuests(m: MethodResult): LostGuest[] {
  return m.checks.filter((c) => !c.resumed).map((c) => ({
    name: c.name,
    reason: c.detail,
    ...(c.kernelCrash ? { kernelCrash: c.kernelCrash.lines } : {}),
  }));
}

/**
 * The known cause of a QEMU baseline's lost guests, when it applies: QEMU
 * before 9.0 under TCG can lose guest writes during its own migration
 * (upstream commit 03bfc2188f). Undefined for gangway (QEMU moves none of
 * its RAM), for a method that lost nothing, and for KVM or QEMU 9.0 on.
 *
 * @param m A method's measurement
 * @returns One sentence, or undefined
 */
export function knownQemuIssue(m: MethodResult): string | undefined {
  if (m.method === "gangway" || m.resumed === m.checks.length) return undefined;
  const major = Number(m.qemuVersion.split(".")[0]);
  if (m.accelerator !== "tcg" || !(major < QEMU_TCG_DIRTY_FIX.fixedIn)) return undefined;
  return `likely QEMU's own bug: QEMU ${m.qemuVersion} under TCG can lose guest writes during ` +
    `its migration, fixed in QEMU ${QEMU_TCG_DIRTY_FIX.fixedIn}.0 by upstream commit ` +
    `${QEMU_TCG_DIRTY_FIX.commit} "${QEMU_TCG_DIRTY_FIX.title}" (docs/lab.md: run the ` +
    "baselines with --qemu-binary NEWER_QEMU)";
}

/**
 * The lines the summary prints under its table: each lost guest with its
 * reason (and its kernel's first crash lines), then the known issue.
 *
 * @param methods The methods of one run
 * @returns Lines; none when no guest was lost
 */
export function formatLostGuests(methods: readonly MethodResult[]): string[] {
  const lines: string[] = [];
  for (const m of methods) {
    const lost = lostGuests(m);
    if (lost.length === 0) continue;
    lines.push(`${m.method} lost ${lost.length} of ${m.checks.length} guests:`);
    for (const guest of lost) {
      lines.push(`  ${guest.name}: ${guest.reason}`);
      for (const line of guest.kernelCrash?.slice(2) ?? []) lines.push(`    ${line}`);
    }
    const known = knownQemuIssue(m);
    if (known) lines.push(`  ${known}`);
  }
  return lines;
}

/**
 * What the runs' lost guests make of the exit status: a guest gangway lost,
 * or gangway's RAM not verified, is a failure; a guest a QEMU baseline lost
 * is a warning (its migration completed, so its figures still count).
 *
 * @param results The runs: each one's gang size and measurements (a `LabResult` fits)
 * @returns Failures (exit 1 when any) and warnings, one sentence each
 */
export function judgeLostGuests(
  results: readonly { config: Pick<GangSpec, "guests" | "memoryMiB">; methods: MethodResult[] }[],
): { failures: string[]; warnings: string[] } {
  const failures: string[] = [];
  const warnings: string[] = [];
  for (const result of results) {
    const where = `${result.config.guests} guests of ${result.config.memoryMiB} MiB`;
    for (const m of result.methods) {
      const lost = lostGuests(m);
      if (m.method === "gangway") {
        if (lost.length > 0) failures.push(`gangway lost ${lost.length} guests (${where})`);
        if (m.gangway?.verified === false) {
          failures.push(`gangway's RAM was not verified (${where})`);
        }
      } else if (lost.length > 0) {
        const known = knownQemuIssue(m);
        warnings.push(
          `${m.method} lost ${lost.length} of ${m.checks.length} guests (${where})` +
            (known ? `: ${known}` : ""),
        );
      }
    }
  }
  return { failures, warnings };
}

/**
 * Per method, over every run: guests migrated and guests lost, a record
 * of which method keeps guests alive.
 *
 * @param results The runs
 * @returns One line per method, in the order they first ran
 */
export function lostTotals(results: readonly LabResult[]): LostTotals[] {
  const totals = new Map<LabMethod, LostTotals>();
  for (const m of results.flatMap((r) => r.methods)) {
    const t = totals.get(m.method) ??
      { method: m.method, runs: 0, migrated: 0, lost: 0, crashed: 0 };
    const lost = lostGuests(m);
    t.runs++;
    t.migrated += m.checks.length;
    t.lost += lost.length;
    t.crashed += lost.filter((g) => g.kernelCrash).length;
    totals.set(m.method, t);
  }
  return [...totals.values()];
}
