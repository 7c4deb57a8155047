/**
 * Synthetic live guests for tests and experiments: a RAM file with guest-
 * like contents plus a writer process that keeps dirtying it, pausable
 * like a VM (SIGSTOP / SIGCONT).
 *
 * @module
 */
import { nativeLibraryPath } from "../native/library.ts";
import { PAGE_SIZE, RamFile } from "../native/ram_file.ts";
import type { WriteMix } from "./writer.ts";
import { delay } from "../_delay.ts";

export type { WriteMix };

/** Options of {@linkcode SyntheticGuest.start}. */
export interface SyntheticGuestOptions {
  /** RAM size in bytes (a multiple of 4096). */
  bytes: number;
  /** Fills the RAM before the writer starts: page number to content, or undefined for a hole. */
  fill?: (page: number) => Uint8Array | undefined;
  /** Pages the writer dirties per second (0: no writer). */
  pagesPerSecond: number;
  /** What the writer writes. Default: all random. */
  mix?: WriteMix;
}

/** The writer's module: a URL, so that it runs from a checkout (any path) or from a server. */
const WRITER = new URL("./writer.ts", import.meta.url);

/**
 * A RAM file and the process writing it.
 *
 * Requires `--allow-ffi`, `--allow-run` (deno, ps) and `--allow-write`.
 */
export class SyntheticGuest implements AsyncDisposable {
  readonly name: string;
  readonly path: string;
  /** Resolves once the writer has dirtied its first pages (at once without a writer). */
  readonly writing: Promise<void>;
  #writer: Deno.ChildProcess | undefined;
  #paused = false;

  private constructor(name: string, path: string, writer: Deno.ChildProcess | undefined) {
    this.name = name;
    this.path = path;
    this.#writer = writer;
    this.writing = writer ? firstLine(writer.stdout) : Promise.resolve();
    this.writing.catch(() => {});
  }

  /** Creates the RAM file, fills it, and starts its writer. */
  static start(name: string, path: string, options: SyntheticGuestOptions): SyntheticGuest {
    fillRam(path, options.bytes, options.fill);
    let writer: Deno.ChildProcess | undefined;
    if (options.pagesPerSecond > 0) {
      const mix = options.mix ?? { random: 1, copy: 0, zero: 0 };
      writer = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-ffi",
          "--allow-env=GANGWAY_LIB",
          WRITER.href,
          path,
          String(options.pagesPerSecond),
          String(mix.random),
          String(mix.copy),
          String(mix.zero),
        ],
        // The library this process opened, wherever it came from (a checkout, the cache).
        env: { GANGWAY_LIB: nativeLibraryPath() },
        stdin: "null",
        stdout: "piped", // its one line says it writes
        stderr: "inherit",
      }).spawn();
    }
    return new SyntheticGuest(name, path, writer);
  }

  /** Whether the writer is stopped. */
  get paused(): boolean {
    return this.#paused;
  }

  /** Stops the writer and waits until the kernel has stopped it (no write in flight). */
  async pause(): Promise<void> {
    if (!this.#writer || this.#paused) return;
    this.#writer.kill("SIGSTOP");
    this.#paused = true;
    for (let i = 0; i < 500; i++) {
      if ((await processState(this.#writer.pid)).startsWith("T")) return;
      await delay(2);
    }
    throw new Error(`Cannot pause synthetic guest "${this.name}": its writer did not stop`);
  }

  /** Lets the writer go on. */
  resume(): void {
    if (!this.#writer || !this.#paused) return;
    this.#writer.kill("SIGCONT");
    this.#paused = false;
  }

  /** Ends the writer (the RAM file stays). Safe to call twice. */
  async stop(): Promise<void> {
    const writer = this.#writer;
    if (!writer) return;
    this.#writer = undefined;
    try {
      writer.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await writer.status;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** The state letter `ps` shows for a process (T: stopped). */
async function processState(pid: number): Promise<string> {
  const output = await new Deno.Command("ps", {
    args: ["-o", "stat=", "-p", String(pid)],
    stdout: "piped",
  }).output();
  return new TextDecoder().decode(output.stdout).trim();
}

/**
 * Creates a RAM file of `bytes` bytes holding `fill`'s pages (holes
 * elsewhere); a short last page keeps the bytes inside the file.
 */
export function fillRam(
  path: string,
  bytes: number,
  fill?: (page: number) => Uint8Array | undefined,
): void {
  using ram = RamFile.open(path, { create: true });
  ram.resize(0);
  ram.resize(bytes);
  if (!fill) return;
  const batch = 256;
  const buf = new Uint8Array(batch * PAGE_SIZE);
  const pages = new Uint32Array(batch);
  let n = 0;
  for (let p = 0; p < ram.pages; p++) {
    const content = fill(p);
    if (!content) continue;
    buf.set(content, n * PAGE_SIZE);
    // Past the end of the file: zeros, or the write is refused (it would lose them).
    if ((p + 1) * PAGE_SIZE > bytes) {
      buf.fill(0, n * PAGE_SIZE + (bytes % PAGE_SIZE), (n + 1) * PAGE_SIZE);
    }
    pages[n++] = p;
    if (n === batch) {
      ram.write(pages, buf);
      n = 0;
    }
  }
  ram.write(pages.subarray(0, n), buf);
}

/** Waits for a first line (or the end) of a stream, then lets go of it. */
async function firstLine(stream: ReadableStream<Uint8Array>): Promise<void> {
  const reader = stream.getReader();
  try {
    await reader.read();
  } finally {
    await reader.cancel();
  }
}
