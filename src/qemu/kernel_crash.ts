/**
 * Finds a Linux kernel crash report (Oops, BUG, panic) in a guest's serial
 * log, so that a guest that stops beating can be reported for what
 * happened to it rather than as silent.
 *
 * @module
 */

/** A crash report found in a serial log. */
export interface KernelCrash {
  /** "panic", "BUG", "Oops" or "corruption" (a list or page check that found damage). */
  kind: KernelCrashKind;
  /** Its first lines, without timestamps (and the faulting instruction's line when later). */
  lines: string[];
}

/** What sort of report starts a crash. */
export type KernelCrashKind = "panic" | "BUG" | "Oops" | "corruption";

/** Lines of a report kept from its start (the `RIP:` line is added when further down). */
const FIRST_LINES = 4;

/**
 * What starts a report, most specific first. Searched anywhere in a line:
 * the guest's own output can tear a kernel line in two.
 */
const STARTS: { kind: KernelCrashKind; pattern: RegExp }[] = [
  { kind: "corruption", pattern: /list_(add|del) corruption/ },
  { kind: "BUG", pattern: /kernel BUG at / },
  // "BUG: unable to handle page fault", "BUG: Bad page state", "watchdog: BUG: soft lockup".
  { kind: "BUG", pattern: /(?<![\w-])BUG: / },
  { kind: "Oops", pattern: /(?<!\w)Oops: / },
  // x86's die(): "general protection fault, ...: 0000 [#1] PREEMPT SMP NOPTI", "invalid opcode: 0000 [#1]".
  { kind: "Oops", pattern: /[a-z]+[^:]*: [0-9a-f]{4} \[#\d+\]/ },
  { kind: "panic", pattern: /Kernel panic - not syncing: / },
];

/** printk's timestamp, `[   12.345678] `, wherever a torn line put it. */
const TIMESTAMP = /\[\s*\d+\.\d+\]\s?/g;
/** The separator WARN and BUG print first: says nothing. */
const CUT_HERE = /^-+\[ cut here \]-+$/;

/**
 * The first kernel crash report in a serial log: its kind (from the line
 * that starts it) and its first lines.
 *
 * Needs no permission.
 *
 * @param log A serial console's text
 * @returns The crash, or undefined when the log has none
 *
 * @example
 * ```ts
 * import { findKernelCrash } from "./kernel_crash.ts";
 * import type { QemuGuest } from "./guest.ts";
 *
 * declare const guest: QemuGuest;
 * const crash = findKernelCrash(await Deno.readTextFile(guest.serialLog));
 * if (crash) console.error(`${crash.kind}: ${crash.lines.join(" | ")}`);
 * ```
 */
export function findKernelCrash(log: string): KernelCrash | undefined {
  // A timestamp starts a kernel line: what precedes it on the same line is another writer's.
  const lines = log.replace(/\r/g, "").replace(TIMESTAMP, "\n").split("\n").map((l) => l.trim());
  for (const [index, line] of lines.entries()) {
    for (const { kind, pattern } of STARTS) {
      const match = pattern.exec(line);
      if (!match) continue;
      const report = [line.slice(match.index), ...lines.slice(index + 1)]
        .filter((l) => l !== "" && !CUT_HERE.test(l));
      const first = report.slice(0, FIRST_LINES);
      const rip = report.find((l) => l.startsWith("RIP: "));
      if (rip && !first.includes(rip)) first.push(rip);
      return { kind, lines: first };
    }
  }
  return undefined;
}

/**
 * Reads a serial log and looks for a kernel crash in it.
 *
 * Requires `--allow-read`.
 *
 * @param serialLog The log's path
 * @returns The crash, or undefined when there is none or no log
 */
export async function readKernelCrash(serialLog: string): Promise<KernelCrash | undefined> {
  try {
    return findKernelCrash(await Deno.readTextFile(serialLog));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}
