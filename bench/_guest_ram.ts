/**
 * Guest-like RAM files for benchmarks: holes, zero pages, pages shared by
 * every guest (a kernel and libraries), poisoned pages, and unique pages,
 * in proportions close to what two idle guests showed on this machine.
 *
 * @module
 */
import { PAGE_SIZE, RamFile } from "../src/native/ram_file.ts";

/** Share of each kind of page in a generated guest (sums to 1). */
export interface GuestMix {
  hole: number;
  zero: number;
  shared: number;
  poison: number;
  unique: number;
}

/** Roughly two idle 256 MiB guests of one image (shared/notes/platform.md). */
export const IDLE_MIX: GuestMix = {
  hole: 0.55,
  zero: 0.14,
  shared: 0.18,
  poison: 0.03,
  unique: 0.1,
};

/** A gang made mostly of unique contents (the worst case for gang migration). */
export const UNIQUE_MIX: GuestMix = { hole: 0, zero: 0, shared: 0, poison: 0, unique: 1 };

const BATCH = 256;
const SHARED_POOL = 8192;

function randomPage(page: Uint8Array): void {
  for (let offset = 0; offset < PAGE_SIZE; offset += 65536) {
    crypto.getRandomValues(page.subarray(offset, Math.min(PAGE_SIZE, offset + 65536)));
  }
}

/** Deterministic kind of page `page` of guest `guest` for a mix (a cheap hash of both). */
function kindOf(mix: GuestMix, guest: number, page: number): keyof GuestMix {
  const x = Math.imul(page ^ Math.imul(guest + 1, 0x9e3779b1), 0x85ebca6b) >>> 0;
  let r = ((x ^ (x >>> 13)) >>> 0) / 2 ** 32;
  for (const kind of ["hole", "zero", "shared", "poison"] as const) {
    if (r < mix[kind]) return kind;
    r -= mix[kind];
  }
  return "unique";
}

/**
 * Writes `guests` RAM files of `bytes` each, named `${prefix}-N`.
 *
 * @returns the paths
 */
export function writeGuestFiles(
  prefix: string,
  guests: number,
  bytes: number,
  mix: GuestMix,
): string[] {
  const pool = new Uint8Array(SHARED_POOL * PAGE_SIZE);
  for (let i = 0; i < SHARED_POOL; i++) {
    randomPage(pool.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE));
  }
  const poison = new Uint8Array(PAGE_SIZE).fill(0xcc);
  const buf = new Uint8Array(BATCH * PAGE_SIZE);
  const pages = new Uint32Array(BATCH);
  const paths: string[] = [];
  for (let g = 0; g < guests; g++) {
    const path = `${prefix}-${g}`;
    using ram = RamFile.open(path, { create: true });
    ram.resize(0);
    ram.resize(bytes);
    let n = 0;
    const flush = () => {
      ram.write(pages.subarray(0, n), buf);
      n = 0;
    };
    for (let p = 0; p < bytes / PAGE_SIZE; p++) {
      const kind = kindOf(mix, g, p);
      if (kind === "hole") continue;
      const page = buf.subarray(n * PAGE_SIZE, (n + 1) * PAGE_SIZE);
      if (kind === "zero") page.fill(0);
      else if (kind === "poison") page.set(poison);
      else if (kind === "shared") {
        const i = (Math.imul(p, 0x27d4eb2d) >>> 0) % SHARED_POOL;
        page.set(pool.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE));
      } else randomPage(page);
      pages[n++] = p;
      if (n === BATCH) flush();
    }
    flush();
    paths.push(path);
  }
  return paths;
}

/** Median of a list of numbers. */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}
