/**
 * A child of durations_test.ts, run with `--v8-flags=--expose-gc`: makes
 * `waits` waits of one LoopTimeout, and prints how many bytes the heap
 * kept for them after a full collection, with the loop still under way.
 *
 * @module
 */
import { LoopTimeout } from "../src/_delay.ts";

const gc = (globalThis as unknown as { gc: () => void }).gc;
const waits = Number(Deno.args[0]);
const timeout = new LoopTimeout(60_000, () => new Error("late"));
gc();
const before = Deno.memoryUsage().heapUsed;
for (let i = 0; i < waits; i++) await timeout.wait(Promise.resolve(i));
gc();
console.log(Deno.memoryUsage().heapUsed - before);
timeout.end();
