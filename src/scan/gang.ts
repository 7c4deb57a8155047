/**
 * A gang: the guests migrated together, their RAM files open, one content
 * index for all of them.
 *
 * @module
 */
import { ContentIndex } from "../native/content_index.ts";
import { RamFile } from "../native/ram_file.ts";
import { totalMemory } from "../native/memory.ts";

/** A guest to open: a name (unique in the gang) and its RAM file. */
export interface GuestSpec {
  /** Name of the guest; on a target it becomes the RAM file's name. */
  name: string;
  /** Path of the guest's RAM file (for QEMU, its memory-backend-file). */
  path: string;
}

/** A guest of an open gang. */
export interface GangGuest {
  /** Its name. */
  readonly name: string;
  /** Its number in the gang and in the content index (0, 1, ...). */
  readonly number: number;
  /** Its open RAM file. */
  readonly ram: RamFile;
}

/** Options of {@linkcode Gang.open}. */
export interface GangOptions {
  /** Seed of the page hashes; a migration picks a random one. Default 0. */
  seed?: bigint;
  /** Narrow the page hashes (tests only: forces collisions). Default 64. */
  hashBits?: number;
}

/**
 * Opens the RAM files of a gang and creates its content index.
 *
 * Requires `--allow-ffi` (the C library opens the RAM files: `--allow-read`
 * does not limit which).
 *
 * @example
 * ```ts
 * using gang = Gang.open([{ name: "vm1", path: "/dev/shm/vm1" }]);
 * console.log(gang.guests[0]!.ram.pages);
 * ```
 */
export class Gang implements Disposable {
  /** The guests, in the order given. */
  readonly guests: readonly GangGuest[];
  /** The gang's content index. */
  readonly index: ContentIndex;

  private constructor(guests: GangGuest[], index: ContentIndex) {
    this.guests = guests;
    this.index = index;
  }

  /**
   * Opens every guest's RAM file (read-only) and indexes nothing yet.
   *
   * @throws Error naming the guest when a file is missing, not a regular
   * file, unreadable or empty, or when two guests share a name or a file
   */
  static open(specs: readonly GuestSpec[], options: GangOptions = {}): Gang {
    if (specs.length === 0) throw new Error("Cannot open a gang: no guests given");
    const opened: RamFile[] = [];
    const index = ContentIndex.create({ seed: options.seed, hashBits: options.hashBits });
    try {
      const files = new Map<string, string>();
      const names = new Set<string>();
      const guests = specs.map(({ name, path }, number) => {
        const ram = RamFile.open(path);
        opened.push(ram);
        if (ram.size === 0) throw new Error(`Cannot open guest RAM "${path}": file is empty`);
        const { dev, ino } = ram.stat();
        const earlier = files.get(`${dev}:${ino}`);
        if (earlier !== undefined) {
          throw new Error(`Cannot open a gang: "${path}" is the same file as "${earlier}"`);
        }
        files.set(`${dev}:${ino}`, path);
        if (names.has(name)) throw new Error(`Cannot open a gang: two guests are named "${name}"`);
        names.add(name);
        return { name, number, ram };
      });
      checkIndexFits(guests);
      for (const { ram } of guests) index.addGuest(ram);
      return new Gang(guests, index);
    } catch (error) {
      index.close();
      for (const ram of opened) ram.close();
      throw error;
    }
  }

  /** Total guest RAM in bytes. */
  get bytes(): number {
    return this.guests.reduce((sum, g) => sum + g.ram.size, 0);
  }

  /** Total pages of all guests. */
  get pages(): number {
    return this.guests.reduce((sum, g) => sum + g.ram.pages, 0);
  }

  /** Closes the index and every RAM file; safe to call twice. */
  close(): void {
    this.index.close();
    for (const guest of this.guests) guest.ram.close();
  }

  /** Closes it, for `using`: see {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** Bytes the index keeps for each page of the gang: its hash and content id at its last scan. */
const INDEX_BYTES_PER_PAGE = 12;

/**
 * Refuses a gang whose index alone would take over half of this host's
 * memory: sparse RAM files of terabytes (a guest's RAM lives on its host,
 * so a real gang needs some 0.3% of it) would otherwise end in the
 * kernel's OOM killer halfway through a scan.
 */
function checkIndexFits(guests: readonly { ram: RamFile }[]): void {
  const pages = guests.reduce((sum, g) => sum + g.ram.pages, 0);
  const needed = pages * INDEX_BYTES_PER_PAGE;
  const total = totalMemory();
  if (total > 0 && needed > total / 2) {
    const gib = (bytes: number) => (bytes / 2 ** 30).toFixed(1);
    const ram = guests.reduce((sum, g) => sum + g.ram.size, 0);
    throw new Error(
      `Cannot open a gang of ${(ram / 2 ** 40).toFixed(2)} TiB of guest RAM: its page index ` +
        `needs ${gib(needed)} GiB of memory, over half of this host's ${gib(total)} GiB`,
    );
  }
}
