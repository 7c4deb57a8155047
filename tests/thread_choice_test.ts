import { assertEquals, assertThrows } from "./_assert.ts";
import {
  RUN_PAGES,
  ThreadChoice,
  TRIAL_STEP_PAGES,
  TRIAL_STEPS,
} from "../src/scan/thread_choice.ts";

const CHUNK = 1024;

/**
 * Scans `pages` pages in chunks, each page taking what `msFor(threads, page)` says (the page's
 * number counts from the start of this call); returns the threads of each chunk.
 */
function run(
  choice: ThreadChoice,
  pages: number,
  msFor: (threads: number, page: number) => number,
): number[] {
  const used: number[] = [];
  for (let done = 0; done < pages; done += CHUNK) {
    const threads = choice.next();
    used.push(threads);
    choice.record(threads, CHUNK, CHUNK * msFor(threads, done));
  }
  return used;
}

const step = TRIAL_STEP_PAGES / CHUNK;
const trialPages = 2 * TRIAL_STEPS * TRIAL_STEP_PAGES;
const stretch = RUN_PAGES / CHUNK;

/** The threads of each chunk of a trial between one thread and `most`. */
function trialOf(most: number): number[] {
  return Array.from({ length: 2 * TRIAL_STEPS }, (_, s) => Array(step).fill(s % 2 ? most : 1))
    .flat();
}

Deno.test("ThreadChoice alternates one thread and all, step by step, then keeps the faster", () => {
  const choice = new ThreadChoice(4);
  const used = run(choice, trialPages + RUN_PAGES, (threads) => (threads === 4 ? 1 : 3));
  assertEquals(used, [...trialOf(4), ...Array(stretch).fill(4)]);
  assertEquals(choice.preferred, 4);
});

Deno.test("ThreadChoice compares the settings on the same regions of RAM, not one region against another", () => {
  // A first region of holes scans 30 times faster than the data after it; two threads are
  // faster on either. Measured one after the other, one thread would have had the holes.
  const choice = new ThreadChoice(2);
  const regionCost = (page: number) => (page < trialPages / 2 ? 0.1 : 3);
  run(choice, trialPages, (threads, page) => regionCost(page) * (threads === 2 ? 0.8 : 1));
  assertEquals(choice.preferred, 2);
});

Deno.test("ThreadChoice stays on one thread when more threads are slower, trying them now and then", () => {
  const choice = new ThreadChoice(2);
  const pages = (trialPages + RUN_PAGES) * 3;
  const used = run(choice, pages, (threads) => (threads === 2 ? 5 : 2));
  // The first trial, then one trial after each run of the faster setting.
  assertEquals(used.filter((t) => t === 2).length, TRIAL_STEPS * step * 3);
  assertEquals(used.slice(-stretch), Array(stretch).fill(1));
  assertEquals(choice.preferred, 1);
});

Deno.test("ThreadChoice notices when the host's load changes", () => {
  const choice = new ThreadChoice(2);
  // Every core is faster at first; then the guests take the cores.
  run(choice, trialPages + RUN_PAGES, (threads) => (threads === 2 ? 1 : 2));
  assertEquals(choice.preferred, 2);
  run(choice, trialPages + RUN_PAGES, (threads) => (threads === 2 ? 4 : 2));
  assertEquals(choice.preferred, 1);
  assertEquals(choice.next(), 1);
});

Deno.test("ThreadChoice forgets a setting's rate when its latest trial was too fast for the clock", () => {
  const choice = new ThreadChoice(2);
  run(choice, trialPages + RUN_PAGES, (threads) => (threads === 2 ? 1 : 2));
  assertEquals(choice.preferred, 2);
  // Two threads now take no measurable time, one thread some: nothing says two are faster now.
  run(choice, trialPages, (threads) => (threads === 2 ? 0 : 2));
  assertEquals(choice.preferred, 1);
});

Deno.test("ThreadChoice with one core always uses one thread", () => {
  assertEquals(run(new ThreadChoice(1), 5 * CHUNK, () => 1), [1, 1, 1, 1, 1]);
  assertThrows(() => new ThreadChoice(0), RangeError, "need a whole number >= 1");
});
