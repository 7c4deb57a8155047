/** Where a guest's downtime ends and how it splits, from made-up marks (no QEMU here). */
import { assertEquals } from "./_assert.ts";
import { downtimeParts, ranAt } from "../src/qemu/downtime_parts.ts";

Deno.test("ranAt() takes off what the destination did after cont, never past the request", () => {
  // Asked at 100, answered at 150, read 12 ms after cont returned: it ran at 138.
  assertEquals(ranAt(100, 150, 12), 138);
  // A claim longer than the request itself cannot put the run before the request.
  assertEquals(ranAt(100, 150, 80), 100);
  // Missing, negative or not a number (an agent's answer is data): the answer's time.
  for (const since of [undefined, -5, Number.NaN, "12", null, Infinity * 0]) {
    assertEquals(ranAt(100, 150, since), 150, String(since));
  }
  assertEquals(ranAt(100, 150, Infinity), 100);
});

Deno.test("downtimeParts() splits pause to run into consecutive parts that add up", () => {
  const parts = downtimeParts(10, {
    started: 40,
    migrating: 42,
    completed: 60,
    verified: 61,
    running: ranAt(61, 80, 5),
  });
  assertEquals(parts, {
    beforeSwitchOverMs: 30,
    setupMs: 2,
    deviceStateMs: 18,
    verifyWaitMs: 1,
    runMs: 14,
  });
});
