import { assertEquals, assertThrows } from "./_assert.ts";
import { RUN_PAGES, ThreadChoice, TRIAL_PAGES } from "../src/scan/thread_choice.ts";

const CHUNK = 1024;

/** Scans `pages` pages in chunks, each taking what `msFor(threads)` says a page; returns the threads of each chunk. */
function run(choice: ThreadChoice, pages: number, msFor: (threads: number) => number): number[] {
  const used: number[] = [];
  for (let done = 0; done < pages; done += CHUNK) {
    const threads = choice.next();
    used.push(threads);
    choice.record(threads, CHUNK, CHUNK * msFor(threads));
  }
  return used;
}

const trial = TRIAL_PAGES / CHUNK;
const stretch = RUN_PAGES / CHUNK;

Deno.test("ThreadChoice tries one thread, then all, then keeps the faster", () => {
  const choice = new ThreadChoice(4);
  const used = run(choice, TRIAL_PAGES * 2 + RUN_PAGES, (threads) => (threads === 4 ? 1 : 3));
  assertEquals(used, [
    ...Array(trial).fill(1),
    ...Array(trial).fill(4),
    ...Array(stretch).fill(4),
  ]);
  assertEquals(choice.preferred, 4);
});

Deno.test("ThreadChoice stays on one thread when more threads are slower, trying them now and then", () => {
  const choice = new ThreadChoice(2);
  const pages = TRIAL_PAGES * 4 + RUN_PAGES * 3;
  const used = run(choice, pages, (threads) => (threads === 2 ? 5 : 2));
  // The first trial, then one trial after each run of the faster setting.
  assertEquals(used.filter((t) => t === 2).length, trial * 3);
  assertEquals(used.slice(-stretch), Array(stretch).fill(1));
  assertEquals(choice.preferred, 1);
});

Deno.test("ThreadChoice notices when the host's load changes", () => {
  const choice = new ThreadChoice(2);
  // Every core is faster at first; then the guests take the cores.
  run(choice, TRIAL_PAGES * 2 + RUN_PAGES, (threads) => (threads === 2 ? 1 : 2));
  assertEquals(choice.preferred, 2);
  run(choice, RUN_PAGES * 3, (threads) => (threads === 2 ? 4 : 2));
  assertEquals(choice.preferred, 1);
  assertEquals(choice.next(), 1);
});

Deno.test("ThreadChoice with one core always uses one thread", () => {
  assertEquals(run(new ThreadChoice(1), 5 * CHUNK, () => 1), [1, 1, 1, 1, 1]);
  assertThrows(() => new ThreadChoice(0), RangeError, "need a whole number >= 1");
});
