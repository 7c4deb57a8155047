/**
 * Builds the C page library into `ffi/build/` when it is missing or stale.
 *
 * Stale means: the sources, the compiler flags or the compiler changed since
 * the last build (a SHA-256 of all three is kept beside the library).
 * `--sanitized` builds instead, into `ffi/build/sanitized/`, the library and
 * the C test driver (`ffi/tests/ffi_check.c`) with ASan and UBSan: the
 * tests run them (tests/sanitizers_test.ts). `--guest` builds, into
 * `ffi/build/guest/`, a static program that checks soft-dirty tracking as a
 * test guest's /init (`ffi/tests/softdirty_guest.c`, run by
 * tests/softdirty_guest_test.ts). Warnings are errors when env CI is "true".
 *
 * Requires `--allow-read`, `--allow-write` (ffi/build), `--allow-run`
 * (gcc) and `--allow-env=CI`.
 *
 * @module
 */

const FFI_DIR = new URL("./", import.meta.url);
const BUILD_DIR = new URL("./build/", FFI_DIR);
const SOURCES = ["ram.c", "dir.c", "hash.c", "compress.c", "index.c", "pagemap.c", "pool.c"];
const HEADERS = ["gangway.h", "internal.h"];
/** The C-level test driver, built into the sanitized variant only. */
const CHECK_SOURCE = "tests/ffi_check.c";
/** The soft-dirty check run inside a QEMU guest: only the pagemap code, linked statically. */
const GUEST_CHECK_SOURCES = ["tests/softdirty_guest.c", "pagemap.c"];
const COMMON_FLAGS = ["-fvisibility=hidden", "-std=gnu11", "-Wall", "-Wextra"];
/** What a user's build gets: speed, and the usual hardening of a library that parses input. */
const RELEASE_FLAGS = ["-O3", "-D_FORTIFY_SOURCE=2", "-fstack-protector-strong"];
/*
 * ASan and UBSan, every finding fatal. No _FORTIFY_SOURCE: ASan checks the
 * same calls more closely and the two interfere.
 */
const SANITIZED_FLAGS = [
  "-O1",
  "-g",
  "-fsanitize=address,undefined",
  "-fno-sanitize-recover=all",
  "-fno-omit-frame-pointer",
];
/*
 * -z nodelete: Deno unloads the library when the process ends, while the
 * scan's helper threads (ffi/pool.c) still sleep in its code; unmapped
 * under them, one crashed about once in a thousand runs. relro and now:
 * the symbol tables are resolved at load and made read-only.
 */
const LIBS = ["-lxxhash", "-lzstd", "-pthread", "-Wl,-z,nodelete", "-Wl,-z,relro,-z,now"];
/*
 * The driver links the sources directly and wraps open(): its test of the
 * soft-dirty probe sees every file the library opens.
 */
const CHECK_LIBS = ["-lxxhash", "-lzstd", "-pthread", "-Wl,--wrap=open"];

/** Where the library lands: the path that `src/native/library.ts` looks up. */
export const LIBRARY_PATH = new URL("libgangway.so", BUILD_DIR);
/** The library built with ASan and UBSan (load it with libasan preloaded). */
export const SANITIZED_LIBRARY_PATH = new URL("sanitized/libgangway.so", BUILD_DIR);
/** The C-level test driver, built with ASan and UBSan. */
export const FFI_CHECK_PATH = new URL("sanitized/ffi_check", BUILD_DIR);

/** The static soft-dirty check, the /init of its test guest. */
export const SOFTDIRTY_GUEST_PATH = new URL("guest/softdirty_guest", BUILD_DIR);

/**
 * Which build: the library users load, the one tests run under sanitizers,
 * or the static soft-dirty check for a test guest.
 */
export type BuildVariant = "release" | "sanitized" | "guest";

/** Options of {@linkcode buildLibrary}. */
export interface BuildOptions {
  /** Rebuild even when the library is up to date. */
  force?: boolean;
  /** Say nothing when there is nothing to do. */
  quiet?: boolean;
  /** Which build. Default "release". */
  variant?: BuildVariant;
}

/** One compiler run of a variant: its output and arguments besides the sources. */
interface Target {
  output: URL;
  sources: string[];
  flags: string[];
  libs: string[];
}

/** Whether this build runs in CI (env CI=true), where warnings are errors. */
function runsInCi(): boolean {
  const access = Deno.permissions.querySync({ name: "env", variable: "CI" });
  return access.state === "granted" && Deno.env.get("CI") === "true";
}

/**
 * The compiler flags of a variant's library. -Werror only in CI: a user's
 * newer compiler may warn about something new, and that must not keep them
 * from building.
 */
export function compilerFlags(variant: BuildVariant, ci: boolean): string[] {
  return [
    ...(variant === "sanitized" ? SANITIZED_FLAGS : RELEASE_FLAGS),
    ...COMMON_FLAGS,
    ...(ci ? ["-Werror"] : []),
  ];
}

function targetsOf(variant: BuildVariant): Target[] {
  const flags = compilerFlags(variant, runsInCi());
  if (variant === "guest") {
    // Static: the guest's initramfs holds this one file and no C library.
    return [{
      output: SOFTDIRTY_GUEST_PATH,
      sources: GUEST_CHECK_SOURCES,
      flags,
      libs: ["-static"],
    }];
  }
  const library = {
    output: variant === "release" ? LIBRARY_PATH : SANITIZED_LIBRARY_PATH,
    sources: SOURCES,
    flags: [...flags, "-fPIC", "-shared"],
    libs: LIBS,
  };
  if (variant === "release") return [library];
  return [library, {
    output: FFI_CHECK_PATH,
    sources: [CHECK_SOURCE, ...SOURCES],
    flags,
    libs: CHECK_LIBS,
  }];
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

function stampPath(target: Target): URL {
  return new URL(target.output.href + ".stamp");
}

async function stampOf(target: Target): Promise<string> {
  const parts = [await run("gcc", ["--version"]), target.flags.join(" "), target.libs.join(" ")];
  for (const file of [...target.sources, ...HEADERS]) {
    parts.push(file, await Deno.readTextFile(new URL(file, FFI_DIR)));
  }
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(parts.join("\0")),
  );
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function readStamp(target: Target): Promise<string | undefined> {
  try {
    await Deno.stat(target.output);
    return (await Deno.readTextFile(stampPath(target))).trim();
  } catch {
    return undefined;
  }
}

/** Compiles one target unless its stamp says it is current; returns whether it compiled. */
async function buildTarget(target: Target, options: BuildOptions): Promise<boolean> {
  const stamp = await stampOf(target);
  const path = target.output.pathname;
  if (!options.force && (await readStamp(target)) === stamp) {
    if (!options.quiet) console.error(`C library is up to date: ${path}`);
    return false;
  }
  await Deno.mkdir(new URL("./", target.output), { recursive: true });
  // Build under a temporary name and rename, so a running process never sees half a file.
  const tmp = new URL(`${target.output.href}.${Deno.pid}.tmp`);
  await run("gcc", [
    ...target.flags,
    "-o",
    tmp.pathname,
    ...target.sources.map((f) => new URL(f, FFI_DIR).pathname),
    ...target.libs,
  ]);
  await Deno.rename(tmp, target.output);
  await Deno.writeTextFile(stampPath(target), stamp + "\n");
  if (!options.quiet) console.error(`Built ${path}`);
  return true;
}

/**
 * Compiles the library (for the sanitized variant, the library and the C
 * test driver; for the guest variant, the static soft-dirty check) unless
 * their stamps say they are current.
 *
 * @returns whether anything compiled
 */
export async function buildLibrary(options: BuildOptions = {}): Promise<boolean> {
  let built = false;
  for (const target of targetsOf(options.variant ?? "release")) {
    if (await buildTarget(target, options)) built = true;
  }
  return built;
}

if (import.meta.main) {
  try {
    await buildLibrary({
      force: Deno.args.includes("--force"),
      quiet: Deno.args.includes("--quiet"),
      variant: Deno.args.includes("--sanitized")
        ? "sanitized"
        : Deno.args.includes("--guest")
        ? "guest"
        : "release",
    });
  } catch (error) {
    console.error(error instanceof Error ? error.message : error);
    Deno.exit(1);
  }
}
