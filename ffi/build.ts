/**
 * Builds the C page library.
 *
 * In a checkout (this module is a `file:` URL) it builds into `ffi/build/`
 * when the library is missing or stale. Stale means: the sources, the
 * compiler flags or the compiler changed since the last build (a SHA-256 of
 * all three is kept beside the library). `--sanitized` builds instead, into
 * `ffi/build/sanitized/`, the library and the C test driver
 * (`ffi/tests/ffi_check.c`) with ASan and UBSan: the tests run them
 * (tests/sanitizers_test.ts). `--guest` builds, into `ffi/build/guest/`, a
 * static program that checks soft-dirty tracking as a test guest's /init
 * (`ffi/tests/softdirty_guest.c`, run by tests/softdirty_guest_test.ts).
 * Warnings are errors when env CI is "true".
 *
 * Run from any other URL (`deno run -A https://HOST/ffi/build.ts`), or
 * through {@linkcode buildCachedLibrary}, it builds into the user's cache
 * directory instead, under a key made of the sources' hash: the sources
 * come with the module graph (./sources.ts), so nothing else is fetched.
 * This is what `src/native/library.ts` does on first use when it finds no
 * library.
 *
 * Requires `--allow-read`, `--allow-write` (ffi/build, or the cache),
 * `--allow-run` (gcc) and `--allow-env` (CI; for the cache GANGWAY_CACHE,
 * XDG_CACHE_HOME and HOME).
 *
 * @module
 */
import { createHash } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { LIBRARY_FILES, LIBRARY_HEADERS, LIBRARY_SOURCES } from "./sources.ts";
import { defaultCacheDir } from "../src/_cache_dir.ts";
import { errorMessage } from "../src/_errors.ts";

const FFI_DIR = new URL("./", import.meta.url);
const BUILD_DIR = new URL("./build/", FFI_DIR);
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
 * The driver links the sources directly and wraps open() and madvise(): its
 * test of the soft-dirty probe sees every file the library opens, and its
 * test of premap stands in for a kernel without MADV_POPULATE_READ or
 * shrinks a file between premap's mincore and its reads.
 */
const CHECK_LIBS = ["-lxxhash", "-lzstd", "-pthread", "-Wl,--wrap=open", "-Wl,--wrap=madvise"];

/** What a build needs from the system: a file, and the Debian package that provides it. */
export interface BuildRequirement {
  /** The file that must exist. */
  file: string;
  /** The Debian package that provides it. */
  debian: string;
}

/** Everything the library's build needs: the compiler and the headers of xxHash and zstd. */
export const BUILD_REQUIREMENTS: readonly BuildRequirement[] = [
  { file: "/usr/bin/gcc", debian: "gcc" },
  { file: "/usr/include/xxhash.h", debian: "libxxhash-dev" },
  { file: "/usr/include/zstd.h", debian: "libzstd-dev" },
];

/** Where the library lands in a checkout: the path that `src/native/library.ts` looks up first. */
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
  sources: readonly string[];
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
    sources: LIBRARY_SOURCES,
    flags: [...flags, "-fPIC", "-shared"],
    libs: LIBS,
  };
  if (variant === "release") return [library];
  return [library, {
    output: FFI_CHECK_PATH,
    sources: [CHECK_SOURCE, ...LIBRARY_SOURCES],
    flags,
    libs: CHECK_LIBS,
  }];
}

/** The requirements whose file is missing: the likely cause of a failed build, named. */
function missingRequirements(): BuildRequirement[] {
  return BUILD_REQUIREMENTS.filter(({ file }) => {
    try {
      Deno.statSync(file);
      return false;
    } catch (error) {
      return error instanceof Deno.errors.NotFound;
    }
  });
}

/** What to install, when something of {@linkcode BUILD_REQUIREMENTS} is missing. */
function installHint(): string {
  const missing = missingRequirements();
  if (missing.length === 0) return "";
  const packages = [...new Set(missing.map(({ debian }) => debian))].join(" ");
  const files = missing.map(({ file }) => file).join(", ");
  return `\nMissing ${files}: on Debian or Ubuntu, apt-get install -y ${packages}`;
}

/** Runs a command to its end; synchronous, so that a first use of the library can build it. */
function run(cmd: string, args: string[]): string {
  let output: Deno.CommandOutput;
  try {
    output = new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).outputSync();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error(`Cannot build the C library: "${cmd}" is not installed${installHint()}`);
    }
    throw error;
  }
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  if (!output.success) {
    throw new Error(`Cannot build the C library: ${cmd} failed\n${text.trim()}${installHint()}`);
  }
  return text;
}

function sha256(parts: string[]): string {
  return createHash("sha256").update(parts.join("\0")).digest("hex");
}

function stampPath(target: Target): URL {
  return new URL(target.output.href + ".stamp");
}

async function stampOf(target: Target): Promise<string> {
  const parts = [run("gcc", ["--version"]), target.flags.join(" "), target.libs.join(" ")];
  for (const file of [...target.sources, ...LIBRARY_HEADERS]) {
    parts.push(file, await Deno.readTextFile(new URL(file, FFI_DIR)));
  }
  return sha256(parts);
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
  const path = fileURLToPath(target.output);
  if (!options.force && (await readStamp(target)) === stamp) {
    if (!options.quiet) console.error(`C library is up to date: ${path}`);
    return false;
  }
  await Deno.mkdir(new URL("./", target.output), { recursive: true });
  // Build under a temporary name and rename, so a running process never sees half a file.
  const tmp = new URL(`${target.output.href}.${Deno.pid}.tmp`);
  run("gcc", [
    ...target.flags,
    "-o",
    fileURLToPath(tmp),
    ...target.sources.map((f) => fileURLToPath(new URL(f, FFI_DIR))),
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
  if (FFI_DIR.protocol !== "file:") {
    throw new Error(
      `Cannot build the C library into ${BUILD_DIR.href}: not a local directory ` +
        "(buildCachedLibrary builds into the cache)",
    );
  }
  let built = false;
  for (const target of targetsOf(options.variant ?? "release")) {
    if (await buildTarget(target, options)) built = true;
  }
  return built;
}

/** The release build's compiler arguments besides the output and the sources: the cache key's flags. */
function cachedBuildArgs(): { flags: string[]; libs: string[] } {
  // Never -Werror: this build runs on the user's machine, with the user's compiler.
  return { flags: [...compilerFlags("release", false), "-fPIC", "-shared"], libs: LIBS };
}

/**
 * The cache key of a release build of these sources: a SHA-256 of every
 * source and header, the compiler flags and the libraries (32 hex digits).
 * The same sources from any URL share one build.
 */
export function sourcesKey(): string {
  const { flags, libs } = cachedBuildArgs();
  const parts = [flags.join(" "), libs.join(" ")];
  for (const [name, text] of Object.entries(LIBRARY_FILES)) parts.push(name, text);
  return sha256(parts).slice(0, 32);
}

/** Where {@linkcode buildCachedLibrary} puts the library in a cache directory. */
export function cachedLibraryPath(cacheDir: string): string {
  return join(cacheDir, "lib", sourcesKey(), "libgangway.so");
}

/**
 * Builds the release library from the sources of the module graph into
 * `cacheDir/lib/KEY/libgangway.so` ({@linkcode cachedLibraryPath}), unless
 * it is there. Synchronous: the library's first use calls it.
 *
 * Requires `--allow-read` and `--allow-write` (cacheDir), `--allow-run`
 * (gcc).
 *
 * @param cacheDir The cache directory (created when missing)
 * @param options `quiet`: say nothing; `force`: build even when it is there
 * @returns the library's path
 * @throws Error naming what is missing (gcc, a -dev package) when the build fails
 */
export function buildCachedLibrary(
  cacheDir: string,
  options: Omit<BuildOptions, "variant"> = {},
): string {
  const path = cachedLibraryPath(cacheDir);
  if (!options.force) {
    try {
      Deno.statSync(path);
      return path;
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
  const dir = dirname(path);
  Deno.mkdirSync(dir, { recursive: true });
  // Sources and output in a private directory, renamed into place: builds running at once never
  // see each other's half-written files.
  const work = Deno.makeTempDirSync({ dir, prefix: ".build-" });
  try {
    if (!options.quiet) console.error(`Building the gangway C library into ${path}`);
    for (const [name, text] of Object.entries(LIBRARY_FILES)) {
      Deno.writeTextFileSync(join(work, name), text);
    }
    const output = join(work, "libgangway.so");
    const { flags, libs } = cachedBuildArgs();
    run("gcc", [...flags, "-o", output, ...LIBRARY_SOURCES.map((f) => join(work, f)), ...libs]);
    Deno.renameSync(output, path);
  } finally {
    Deno.removeSync(work, { recursive: true });
  }
  return path;
}

if (import.meta.main) {
  try {
    const options: BuildOptions = {
      force: Deno.args.includes("--force"),
      quiet: Deno.args.includes("--quiet"),
      variant: Deno.args.includes("--sanitized")
        ? "sanitized"
        : Deno.args.includes("--guest")
        ? "guest"
        : "release",
    };
    if (FFI_DIR.protocol === "file:") {
      await buildLibrary(options);
    } else if (options.variant !== "release") {
      throw new Error(
        `Cannot build the ${options.variant} variant from a URL: it needs a checkout`,
      );
    } else {
      // Run by URL: there is no checkout to build into; the path goes to stdout for scripts.
      console.log(buildCachedLibrary(defaultCacheDir(), options));
    }
  } catch (error) {
    console.error(errorMessage(error));
    Deno.exit(1);
  }
}
