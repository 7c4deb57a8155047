/**
 * A writer for the "newc" cpio format that the Linux kernel unpacks as an
 * initramfs. Writing it here (instead of running `cpio`) makes the image
 * byte-for-byte reproducible and lets it hold /dev/console without root.
 *
 * @module
 */

/** One entry of an initramfs archive. */
export type CpioEntry =
  | { kind: "dir"; path: string; mode?: number }
  | { kind: "file"; path: string; data: Uint8Array; mode?: number }
  | { kind: "symlink"; path: string; target: string }
  | { kind: "chardev"; path: string; major: number; minor: number; mode?: number };

const MAGIC = "070701";
const TYPE_DIR = 0o040000;
const TYPE_FILE = 0o100000;
const TYPE_SYMLINK = 0o120000;
const TYPE_CHARDEV = 0o020000;
const TRAILER = "TRAILER!!!";

function hex8(value: number): string {
  return value.toString(16).padStart(8, "0");
}

function padTo4(length: number): number {
  return (4 - (length % 4)) % 4;
}

interface RawEntry {
  name: string;
  mode: number;
  data: Uint8Array;
  rdevMajor: number;
  rdevMinor: number;
  nlink: number;
}

function raw(entry: CpioEntry): RawEntry {
  const name = entry.path.replace(/^\/+/, "");
  const base = { name, rdevMajor: 0, rdevMinor: 0, nlink: 1, data: new Uint8Array() };
  switch (entry.kind) {
    case "dir":
      return { ...base, mode: TYPE_DIR | (entry.mode ?? 0o755), nlink: 2 };
    case "file":
      return { ...base, mode: TYPE_FILE | (entry.mode ?? 0o644), data: entry.data };
    case "symlink":
      return { ...base, mode: TYPE_SYMLINK | 0o777, data: new TextEncoder().encode(entry.target) };
    case "chardev":
      return {
        ...base,
        mode: TYPE_CHARDEV | (entry.mode ?? 0o600),
        rdevMajor: entry.major,
        rdevMinor: entry.minor,
      };
  }
}

function header(entry: RawEntry, ino: number): Uint8Array {
  const nameSize = new TextEncoder().encode(entry.name).length + 1;
  // Fields: ino mode uid gid nlink mtime filesize devmajor devminor
  // rdevmajor rdevminor namesize check. mtime 0 keeps the archive reproducible.
  const fields = [ino, entry.mode, 0, 0, entry.nlink, 0, entry.data.length, 0, 0]
    .concat([entry.rdevMajor, entry.rdevMinor, nameSize, 0]);
  const text = MAGIC + fields.map(hex8).join("") + entry.name + "\0";
  return new TextEncoder().encode(text + "\0".repeat(padTo4(text.length)));
}

/**
 * Builds a newc cpio archive from the entries, in the order given (a
 * directory must come before what it contains).
 *
 * @example
 * ```ts
 * const archive = writeCpio([{ kind: "dir", path: "bin" }]);
 * ```
 */
export function writeCpio(entries: readonly CpioEntry[]): Uint8Array {
  const parts: Uint8Array[] = [];
  const all = entries.map(raw);
  all.push({
    name: TRAILER,
    mode: 0,
    data: new Uint8Array(),
    rdevMajor: 0,
    rdevMinor: 0,
    nlink: 1,
  });
  all.forEach((entry, i) => {
    parts.push(header(entry, entry.name === TRAILER ? 0 : i + 1));
    parts.push(entry.data, new Uint8Array(padTo4(entry.data.length)));
  });
  const out = new Uint8Array(parts.reduce((sum, p) => sum + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
