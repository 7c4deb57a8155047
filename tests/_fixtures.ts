/**
 * Test fixtures: guest-like RAM files in /dev/shm, built through the C
 * library (Deno's own file API wants --allow-all under /dev), and page
 * contents that are reproducible from a number.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { PAGE_SIZE, RamFile } from "../src/native/ram_file.ts";

let counter = 0;

/** A fresh path under /dev/shm for this test process. */
export function shmPath(label: string): string {
  return `/dev/shm/gangway-test-${Deno.pid}-${counter++}-${label}`;
}

/** A page filled from a xorshift stream seeded by `seed` (never all zero). */
export function patternPage(seed: number): Uint8Array {
  const page = new Uint8Array(PAGE_SIZE);
  const words = new Uint32Array(page.buffer);
  let x = (seed * 2654435761 + 1) >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    words[i] = x;
  }
  return page;
}

/** One page of a fixture file: content, an explicit zero page, or a hole. */
export type PageSpec = Uint8Array | "zero" | "hole";

/**
 * Creates a RAM file of the given pages (the last one may be cut short to
 * `size` bytes). Written pages are data, "hole" pages are never written.
 */
export function makeRamFile(path: string, pages: PageSpec[], size = pages.length * PAGE_SIZE) {
  using ram = RamFile.open(path, { create: true });
  ram.resize(0); // a stale file of the same name must not leak data into this one
  ram.resize(size);
  const written: number[] = [];
  const buf = new Uint8Array(pages.length * PAGE_SIZE);
  pages.forEach((spec, page) => {
    if (spec === "hole") return;
    const at = written.length * PAGE_SIZE;
    if (spec !== "zero") buf.set(spec, at);
    // Past the end of a short last page: zeros, as a read returns them (a write refuses others).
    if ((page + 1) * PAGE_SIZE > size) buf.fill(0, at + (size % PAGE_SIZE), at + PAGE_SIZE);
    written.push(page);
  });
  ram.write(Uint32Array.from(written), buf);
  return path;
}

/** Reads a whole RAM file (holes as zeros). */
export function readRamFile(path: string): Uint8Array {
  using ram = RamFile.open(path);
  const buf = new Uint8Array(ram.pages * PAGE_SIZE);
  ram.read(0, ram.pages, buf, new Uint8Array(ram.pages));
  return buf.subarray(0, ram.size);
}

/** Removes files, ignoring those already gone. */
export async function removeFiles(...paths: string[]): Promise<void> {
  for (const path of paths) {
    await Deno.remove(path).catch((error) => {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    });
  }
}

/**
 * Runs TypeScript `code` in a child Deno with only these permissions (a
 * module of the project imports by `new URL(..., import.meta.url)`), and
 * returns what it printed, parsed as JSON; fails the test when it fails.
 */
export async function runChildScript(
  code: string,
  permissions: string[],
  args: string[] = [],
): Promise<unknown> {
  const { stdout, stderr, success } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...permissions,
      `data:application/typescript,${encodeURIComponent(code)}`,
      ...args,
    ],
  }).output();
  if (!success) throw new Error(`The child script failed: ${new TextDecoder().decode(stderr)}`);
  return JSON.parse(new TextDecoder().decode(stdout));
}

/** Runs a program (mount, umount...) and fails the test, with what it said, when it fails. */
export async function runOrFail(program: string, ...args: string[]): Promise<void> {
  const { success, stderr } = await new Deno.Command(program, { args, stderr: "piped" }).output();
  if (!success) {
    throw new Error(`${program} ${args.join(" ")}: ${new TextDecoder().decode(stderr)}`);
  }
}

/** SHA-256 of bytes, as lowercase hex (a file reference's `sha256`). */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** A connected pair over loopback TCP, both ends closed on dispose: `near` connected to `far`. */
export async function loopbackPair(): Promise<
  { near: Deno.TcpConn; far: Deno.TcpConn } & Disposable
> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [near, far] = await Promise.all([
    Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
    listener.accept(),
  ]);
  return {
    near,
    far,
    [Symbol.dispose]: () => {
      for (const conn of [near, far]) {
        try {
          conn.close();
        } catch {
          // Closed already.
        }
      }
    },
  };
}
