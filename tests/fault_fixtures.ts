/**
 * What the fault-injection tests share: a live gang (synthetic guests
 * whose writers keep dirtying their RAM) migrated with pause and resume
 * wired to the writers, and the checks every fault must pass.
 *
 * @module
 */
import { assert, assertEquals } from "./_assert.ts";
import { Gang } from "../src/scan/gang.ts";
import { transferGang, type TransferGangOptions } from "../src/transfer/transfer_gang.ts";
import { TargetError } from "../src/transfer/sender.ts";
import { randomSeed } from "../src/transfer/seed.ts";
import { PAGE_SIZE } from "../src/native/ram_file.ts";
import { SyntheticGuest } from "../src/synthetic/synthetic_guest.ts";
import type { ReceiverEvent } from "../src/transfer/receiver.ts";
import { patternPage, removeFiles, shmPath } from "./_fixtures.ts";

/** Synthetic guests that keep running, and how the migration paused and resumed them. */
export interface LiveGang extends AsyncDisposable {
  guests: SyntheticGuest[];
  /** Times the migration resumed the guests. */
  resumed: number;
  /** Times it paused them. */
  paused: number;
  /**
   * Migrates the gang over `conn`; `atPause` runs once the guests are
   * paused (inject a fault in the final round there).
   */
  migrate(
    conn: Deno.Conn,
    options?: TransferGangOptions & { atPause?: () => void },
  ): ReturnType<typeof transferGang>;
}

/** Starts `count` live guests of `pages` pages each (distinct contents). */
export function startLiveGang(label: string, count = 2, pages = 2048): LiveGang {
  const guests = Array.from(
    { length: count },
    (_, g) =>
      SyntheticGuest.start(`${label}${g}`, shmPath(`${label}${g}`), {
        bytes: pages * PAGE_SIZE,
        fill: (p) => patternPage(p + g * 100_000),
        pagesPerSecond: 200,
      }),
  );
  const gang: LiveGang = {
    guests,
    resumed: 0,
    paused: 0,
    async migrate(conn, options = {}) {
      using opened = Gang.open(guests.map((g) => ({ name: g.name, path: g.path })), {
        seed: randomSeed(),
      });
      return await transferGang(opened, conn, {
        ...options,
        pause: async () => {
          gang.paused++;
          for (const g of guests) await g.pause();
          options.atPause?.();
        },
        resume: () => {
          gang.resumed++;
          for (const g of guests) g.resume();
        },
      });
    },
    async [Symbol.asyncDispose]() {
      for (const g of guests) await g.stop();
      await removeFiles(...guests.map((g) => g.path));
    },
  };
  return gang;
}

/**
 * The checks of every fault: the sender failed with a TargetError whose
 * message matches, no guest is left paused (and they were resumed if
 * they had been paused), the receiver logged a failure and completed
 * nothing, and the target directory holds none of the gang's files.
 */
export async function assertSafeFailure(
  error: unknown,
  message: RegExp,
  gang: LiveGang,
  receiver: { events: ReceiverEvent[]; dir: string },
): Promise<void> {
  // The receiver may learn of the fault after the sender: it logs it once the files are gone.
  await waitFor(() => receiver.events.some((e) => e.event === "failed"), "the receiver's failure");
  assert(error instanceof TargetError, `expected a TargetError, got: ${error}`);
  assert(message.test(error.message), `expected ${message} in: ${error.message}`);
  assert(gang.guests.every((g) => !g.paused), "no guest is left paused");
  assertEquals(gang.resumed, gang.paused, "guests paused by the migration were resumed");
  assert(!receiver.events.some((e) => e.event === "complete"), "the receiver completed nothing");
  assert(receiver.events.some((e) => e.event === "failed"), "the receiver logged the failure");
  const left = [...Deno.readDirSync(receiver.dir)].map((e) => e.name)
    .filter((name) => gang.guests.some((g) => g.name === name));
  assertEquals(left, [], "the target discarded the partial gang");
}

/** Waits until `check` holds, polling (for events of another task); fails after `ms`. */
export async function waitFor(check: () => boolean, what: string, ms = 20_000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
