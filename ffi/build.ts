/**
 * Builds the C page library into `ffi/build/` when it is missing or stale.
 *
 * Stale means: the sources, the compiler flags or the compiler changed since
 * the last build (a SHA-256 of all three is kept beside the library).
 *
 * Requires `--allow-read`, `--allow-write` (ffi/build) and `--allow-run`
 * (gcc).
 *
 * @module
 */

const FFI_DIR = new URL("./", import.meta.url);
const BUILD_DIR = new URL("./build/", FFI_DIR);
const SOURCES = ["ram.c", "dir.c", "hash.c", "compress.c", "index.c", "pagemap.c", "pool.c"];
const HEADERS = ["gangway.h", "internal.h"];
const CFLAGS = [
  "-O3",
  "-fPIC",
  "-shared",
  "-fvisibility=hidden",
  "-std=gnu11",
  "-Wall",
  "-Wextra",
  "-Werror",
];
/*
 * -z nodelete: Deno unloads the library when the process ends, while the
 * scan's helper threads (ffi/pool.c) still sleep in its code; unmapped
 * under them, one crashed about once in a thousand runs.
 */
const LIBS = ["-lxxhash", "-lzstd", "-pthread", "-Wl,-z,nodelete"];

/** Where the library lands: the path that `src/native/library.ts` looks up. */
export const LIBRARY_PATH = new URL("libgangway.so", BUILD_DIR);
const STAMP_PATH = new URL("libgangway.stamp", BUILD_DIR);

/** Options of {@linkcode buildLibrary}. */
export interface BuildOptions {
  /** Rebuild even when the library is up to date. */
  force?: boolean;
  /** Say nothing when there is nothing to do. */
  quiet?: boolean;
}

async function run(cmd: string, args: string[]): Promise<string> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error(`Cannot build the C library: "${cmd}" is not installed`);
    }
    throw error;
  }
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  if (!output.success) {
    throw new Error(`Cannot build the C library: ${cmd} failed\n${text.trim()}`);
  }
  return text;
}

async function stampOf(): Promise<string> {
  const parts = [await run("gcc", ["--version"]), CFLAGS.join(" "), LIBS.join(" ")];
  for (const file of [...SOURCES, ...HEADERS]) {
    parts.push(file, await Deno.readTextFile(new URL(file, FFI_DIR)));
  }
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(parts.join("\0")),
  );
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function readStamp(): Promise<string | undefined> {
  try {
    await Deno.stat(LIBRARY_PATH);
    return (await Deno.readTextFile(STAMP_PATH)).trim();
  } catch {
    return undefined;
  }
}

/**
 * Compiles the library unless its stamp says it is current.
 *
 * @returns whether it compiled
 */
export async function buildLibrary(options: BuildOptions = {}): Promise<boolean> {
  const stamp = await stampOf();
  if (!options.force && (await readStamp()) === stamp) {
    if (!options.quiet) console.error(`C library is up to date: ${LIBRARY_PATH.pathname}`);
    return false;
  }
  await Deno.mkdir(BUILD_DIR, { recursive: true });
  // Build under a temporary name and rename, so a running process never sees half a file.
  const tmp = new URL(`libgangway.so.${Deno.pid}.tmp`, BUILD_DIR);
  await run("gcc", [
    ...CFLAGS,
    "-o",
    tmp.pathname,
    ...SOURCES.map((f) => new URL(f, FFI_DIR).pathname),
    ...LIBS,
  ]);
  await Deno.rename(tmp, LIBRARY_PATH);
  await Deno.writeTextFile(STAMP_PATH, stamp + "\n");
  if (!options.quiet) console.error(`Built ${LIBRARY_PATH.pathname}`);
  return true;
}

if (import.meta.main) {
  try {
    await buildLibrary({
      force: Deno.args.includes("--force"),
      quiet: Deno.args.includes("--quiet"),
    });
  } catch (error) {
    console.error(error instanceof Error ? error.message : error);
    Deno.exit(1);
  }
}
