/**
 * The writer of a synthetic guest: a process that dirties pages of a RAM
 * file at a given rate, with a given mix of new random contents, copies of
 * other pages and zero pages. Pause it with SIGSTOP, resume with SIGCONT.
 *
 * Usage: `deno run --allow-ffi --allow-env=GANGWAY_LIB writer.ts PATH
 * PAGES_PER_SECOND RANDOM COPY ZERO` (the mix as three weights).
 *
 * @module
 */
import { PAGE_SIZE, RamFile } from "../native/ram_file.ts";
import { delay } from "../_delay.ts";

/** What the writer writes, as relative weights. */
export interface WriteMix {
  /** New random contents. */
  random: number;
  /** Copies of another page of the guest (duplicates). */
  copy: number;
  /** Zero pages. */
  zero: number;
}

const TICK_MS = 10;

/**
 * Writes forever: `pagesPerSecond` pages a second in ticks of 10 ms;
 * `onFirstWrites` is called once the first tick's pages are written.
 */
export async function runWriter(
  path: string,
  pagesPerSecond: number,
  mix: WriteMix,
  onFirstWrites: () => void = () => {},
): Promise<never> {
  using ram = RamFile.open(path, { write: true });
  const page = new Uint8Array(PAGE_SIZE);
  const hasData = new Uint8Array(1);
  const total = mix.random + mix.copy + mix.zero;
  const pick = () => Math.floor(Math.random() * ram.pages);
  let owed = 0;
  for (;;) {
    owed += (pagesPerSecond * TICK_MS) / 1000;
    for (; owed >= 1; owed--) {
      const target = pick();
      const r = Math.random() * total;
      if (r < mix.random) {
        crypto.getRandomValues(page);
        ram.write(Uint32Array.of(target), page);
      } else if (r < mix.random + mix.copy) {
        ram.read(pick(), 1, page, hasData);
        ram.write(Uint32Array.of(target), page);
      } else {
        ram.punch(target, 1);
      }
    }
    onFirstWrites();
    onFirstWrites = () => {};
    await delay(TICK_MS);
  }
}

if (import.meta.main) {
  const [path, rate, random, copy, zero] = Deno.args;
  if (!path || !rate) {
    console.error("usage: writer.ts PATH PAGES_PER_SECOND RANDOM COPY ZERO");
    Deno.exit(2);
  }
  await runWriter(path, Number(rate), {
    random: Number(random ?? 1),
    copy: Number(copy ?? 0),
    zero: Number(zero ?? 0),
  }, () => console.log("writing")); // tells its guest that pages are being dirtied
}
