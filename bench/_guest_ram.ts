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

/** A number in [0, 1) that depends only on its two arguments (a cheap hash). */
function uniform(a: number, b: number): number {
  const x = Math.imul(b ^ Math.imul(a + 1, 0x9e3779b1), 0x85ebca6b) >>> 0;
  return ((x ^ (x >>> 13)) >>> 0) / 2 ** 32;
}

/**
 * Holes come in blocks of 2 MiB, as in real guests (a 256 MiB guest idle
 * for 20 s had its 29,000 data pages in 12 regions): holes scattered page
 * by page would make every scan read far more than a guest ever needs.
 */
const HOLE_BLOCK_PAGES = 512;

/**
 * Data pages come in runs of one kind: two real idle guests had runs of 38
 * and 69 pages on average (zero, new, duplicate), not a kind drawn per page.
 */
const KIND_RUN_PAGES = 32;

/** Deterministic kind of page `page` of guest `guest` for a mix. */
function kindOf(mix: GuestMix, guest: number, page: number): keyof GuestMix {
  if (uniform(guest, -1 - Math.floor(page / HOLE_BLOCK_PAGES)) < mix.hole) return "hole";
  let r = uniform(guest, Math.floor(page / KIND_RUN_PAGES)) * (1 - mix.hole);
  for (const kind of ["zero", "shared", "poison"] as const) {
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
