import { assert, assertEquals, assertRejects, assertThrows } from "./_assert.ts";
import {
  MAX_DURATION_SECONDS,
  parseAddress,
  parseCount,
  parseDuration,
  parseRate,
  parseSize,
} from "../src/cli/_units.ts";
import { UsageError } from "../src/cli/_cli.ts";
import { addressText } from "../src/transfer/accept_connections.ts";
import { delay, LoopTimeout, MAX_TIMER_MS, withTimeout } from "../src/_delay.ts";
import { Gang } from "../src/scan/gang.ts";
import { GangSender } from "../src/transfer/sender.ts";
import { randomSeed } from "../src/transfer/seed.ts";
import { makeRamFile, patternPage, removeFiles, shmPath } from "./_fixtures.ts";

Deno.test("parseDuration() takes whole seconds up to the longest wait a timer can take", () => {
  assertEquals(MAX_DURATION_SECONDS, 2147483);
  assertEquals(parseDuration("60", "--idle-timeout"), 60_000);
  assertEquals(parseDuration("2147483", "--stall-timeout"), 2_147_483_000);
  const error = assertThrows(() => parseDuration("2200000", "--stall-timeout"), UsageError);
  assertEquals(
    error.message,
    '--stall-timeout takes at most 2147483 seconds (24.8 days), got "2200000"',
  );
  assertThrows(() => parseDuration("0", "--idle-timeout"), UsageError, "positive integer");
});

/** Runs `body` with setTimeout recording the waits it is asked for. */
async function recordingTimers(body: () => Promise<void>): Promise<number[]> {
  const asked: number[] = [];
  const real = globalThis.setTimeout;
  globalThis.setTimeout = ((fn: () => void, ms?: number) => {
    asked.push(ms ?? 0);
    return real(fn, ms);
  }) as typeof setTimeout;
  try {
    await body();
  } finally {
    globalThis.setTimeout = real;
  }
  return asked;
}

Deno.test("parseCount() takes decimal digits only, up to its maximum", () => {
  assertEquals(parseCount("5", "--n"), 5);
  assertEquals(parseCount("65536", "--n", 65536), 65536);
  for (const text of ["1e3", "0x10", " 5 ", "5.0", "", "-1", "0", "+5", "99999999999999999999"]) {
    assertThrows(
      () => parseCount(text, "--n"),
      UsageError,
      `--n needs a positive integer, got "${text}"`,
    );
  }
  assertThrows(
    () => parseCount("65537", "--max-guests", 65536),
    UsageError,
    "--max-guests takes at most 65536",
  );
});

Deno.test("parseSize() and parseRate() take no number past exact integers", () => {
  assertEquals(parseSize("256M", "--memory"), 256 * 2 ** 20);
  assertEquals(parseRate("125M", "--max-bandwidth"), 125e6);
  assertEquals(parseSize(String(Number.MAX_SAFE_INTEGER), "--memory"), Number.MAX_SAFE_INTEGER);
  for (const text of ["9007199254740993", "99999999999999999999999", "9999999999T"]) {
    assertThrows(() => parseSize(text, "--memory"), UsageError, `--memory is too large: "${text}"`);
    assertThrows(
      () => parseRate(text, "--max-bandwidth"),
      UsageError,
      "--max-bandwidth is too large",
    );
  }
});

Deno.test("delay() and withTimeout() cut a wait longer than a timer takes, rather than firing at once", async () => {
  const stop = new AbortController();
  const asked = await recordingTimers(async () => {
    const waiting = delay(2 ** 40, stop.signal);
    stop.abort(new Error("stopped"));
    await assertRejects(() => waiting, Error, "stopped");
    assertEquals(await withTimeout(Promise.resolve(7), 2 ** 40, () => new Error("late")), 7);
  });
  assertEquals(asked, [MAX_TIMER_MS, MAX_TIMER_MS]);
});

Deno.test("GangSender.connect() refuses a timeout longer than a timer takes before it sends anything", async () => {
  const path = makeRamFile(shmPath("long-timeout"), [patternPage(1)]);
  try {
    using gang = Gang.open([{ name: "g", path }], { seed: randomSeed() });
    let written = 0;
    const conn = {
      read: () => Promise.resolve(null),
      write: (data: Uint8Array) => Promise.resolve((written += data.length, data.length)),
      close() {},
    };
    await assertRejects(
      () => GangSender.connect(gang, conn, { stallTimeoutMs: 2 ** 31 }),
      RangeError,
      "stallTimeoutMs must be 1 to 2147483647 ms",
    );
    assertEquals(written, 0);
  } finally {
    await removeFiles(path);
  }
});

Deno.test("LoopTimeout gives each wait of a loop the longest wait, with one timer: a loop of quick waits longer than that goes on, one slow wait fails", async () => {
  const asked = await recordingTimers(async () => {
    const timeout = new LoopTimeout(300, () => new Error("no data for 300 ms"));
    const started = performance.now();
    // Waits of 10 ms each, 700 ms in all: no single one is late.
    let waits = 0;
    for (; performance.now() - started < 700; waits++) await timeout.wait(delay(10));
    assert(waits >= 20, `${waits} waits`);
    // One that does not end within 300 ms of its start.
    await assertRejects(() => timeout.wait(new Promise(() => {})), Error, "no data for 300 ms");
    timeout.end();
  });
  // One timer for the loop, armed again for the rest of a wait when it fires during one (the
  // delays' own 10 ms timers are the others): not one a wait.
  const loopTimers = asked.filter((ms) => ms !== 10);
  assertEquals(loopTimers[0], 300);
  assert(loopTimers.length <= 6, `${loopTimers.length} timers: ${loopTimers.join(", ")}`);
});

Deno.test("LoopTimeout keeps nothing a wait while its loop goes on: a frame trickled a byte a read costs no memory a read", async () => {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--v8-flags=--expose-gc",
      new URL("./_loop_timeout_heap.ts", import.meta.url).href,
      "100000",
    ],
  }).output();
  assertEquals(code, 0, new TextDecoder().decode(stderr));
  const kept = Number(new TextDecoder().decode(stdout).trim());
  // A reaction left a wait on one promise of the loop kept some 300 bytes each: 30 MB here.
  assert(kept < 4e6, `the heap kept ${kept} bytes for 100,000 waits`);
});

Deno.test("parseSize() and parseRate() read KiB, MiB... as powers of 2 and kB, MB... as powers of 10", () => {
  assertEquals(parseRate("1MiB", "--max-bandwidth"), 2 ** 20);
  assertEquals(parseRate("1MB", "--max-bandwidth"), 1e6);
  assertEquals(parseRate("1M", "--max-bandwidth"), 1e6);
  // Under 16 KiB/s a frame could outlast the target's idle timeout.
  assertThrows(
    () => parseRate("1", "--max-bandwidth"),
    UsageError,
    '--max-bandwidth must be at least 16384 bytes per second, got "1"',
  );
  assertEquals(parseRate("16KiB", "--max-bandwidth"), 16384);
  assertEquals(parseSize("1MB", "--memory"), 1e6);
  assertEquals(parseSize("1MiB", "--memory"), 2 ** 20);
  assertEquals(parseSize("1M", "--memory"), 2 ** 20);
  assertEquals(parseSize("2KiB", "--memory"), 2048);
  // Spaces, unknown units and a unit without its letter are refused, as other numbers' are.
  for (const text of [" 5", "5 M", "5M ", "1Mb", "1iB", "1B", "1X"]) {
    assertThrows(() => parseRate(text, "--max-bandwidth"), UsageError, `got "${text}"`);
  }
});

Deno.test("parseAddress() takes an IPv6 host in brackets, and says so when it is not", () => {
  assertEquals(parseAddress("[::1]:7000", "--target"), { hostname: "::1", port: 7000 });
  assertEquals(parseAddress("10.0.0.2:7000", "--target"), { hostname: "10.0.0.2", port: 7000 });
  assertThrows(
    () => parseAddress("::1:7000", "--target"),
    UsageError,
    'got "::1:7000" (an IPv6 address goes in brackets: "[::1]:7000")',
  );
  assertThrows(
    () => parseAddress("host:x", "--target"),
    UsageError,
    'needs HOST:PORT, got "host:x"',
  );
});

Deno.test("addressText() writes an IPv6 host in brackets, as parseAddress() reads it", () => {
  const v6: Deno.NetAddr = { transport: "tcp", hostname: "::1", port: 7000 };
  assertEquals(addressText(v6), "[::1]:7000");
  assertEquals(parseAddress(addressText(v6), "--listen"), { hostname: "::1", port: 7000 });
  assertEquals(addressText({ transport: "tcp", hostname: "10.0.0.2", port: 1 }), "10.0.0.2:1");
});
