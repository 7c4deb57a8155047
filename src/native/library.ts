/**
 * The C page library (`ffi/`), opened on first use.
 *
 * Lookup order: the path in env `GANGWAY_LIB` (when set, the only one
 * tried), then the local build next to this module in a checkout
 * (`ffi/build/libgangway.so`, made by `deno task build`), then the build in
 * the user's cache for these exact sources
 * (`~/.cache/gangway/lib/KEY/libgangway.so`, see ffi/build.ts). When none
 * loads, the library is built into the cache from the C sources that came
 * with the module graph: a script that imports gangway by URL needs gcc and
 * the -dev packages once, and no checkout.
 *
 * Importing this module opens nothing and needs no permission; the first
 * call needs `--allow-ffi` (and `--allow-env=GANGWAY_LIB` for the override
 * to be seen; for the cache `--allow-env` of GANGWAY_CACHE, XDG_CACHE_HOME
 * and HOME; to build there `--allow-read`, `--allow-write` and
 * `--allow-run=gcc`).
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { buildCachedLibrary, cachedLibraryPath } from "../../ffi/build.ts";
import { CACHE_DIR_VARIABLES, defaultCacheDir } from "../_cache_dir.ts";
import { errorMessage } from "../_errors.ts";

/** Must equal GW_ABI_VERSION in ffi/gangway.h: a stale build is refused. */
const ABI_VERSION = 35;

/** One entry per C function, with its prototype from ffi/gangway.h. */
const SYMBOLS = {
  // uint32_t gw_abi_version(void)
  gw_abi_version: { parameters: [], result: "u32" },

  // int gw_ram_open(const char *path, uint32_t flags, gw_ram **out)
  gw_ram_open: { parameters: ["buffer", "u32", "buffer"], result: "i32" },
  // void gw_ram_close(gw_ram *ram)
  gw_ram_close: { parameters: ["pointer"], result: "void" },
  // uint64_t gw_ram_size(const gw_ram *ram)
  gw_ram_size: { parameters: ["pointer"], result: "u64" },
  // int gw_ram_resize(gw_ram *ram, uint64_t size)
  gw_ram_resize: { parameters: ["pointer", "u64"], result: "i32" },
  // int gw_ram_read(gw_ram *ram, uint32_t first, uint32_t count, uint8_t *buf, uint8_t *has_data)
  gw_ram_read: { parameters: ["pointer", "u32", "u32", "buffer", "buffer"], result: "i32" },
  // int gw_ram_write(gw_ram *ram, const uint32_t *pages, uint32_t count, const uint8_t *buf)
  gw_ram_write: { parameters: ["pointer", "buffer", "u32", "buffer"], result: "i32" },
  // int gw_ram_punch(gw_ram *ram, uint32_t first, uint32_t count)
  gw_ram_punch: { parameters: ["pointer", "u32", "u32"], result: "i32" },
  // int gw_ram_copy(gw_ram *const *src, const uint32_t *src_pages, gw_ram *dst,
  //                 const uint32_t *dst_pages, uint32_t count, uint64_t seed,
  //                 const uint64_t *expected, uint32_t *bad)
  gw_ram_copy: {
    parameters: ["buffer", "buffer", "pointer", "buffer", "u32", "u64", "buffer", "buffer"],
    result: "i32",
  },
  // int gw_ram_advise(gw_ram *ram, uint32_t advice)
  gw_ram_advise: { parameters: ["pointer", "u32"], result: "i32" },
  // int gw_ram_premap(gw_ram *ram, uint32_t first, uint32_t count)
  // Non-blocking: on a VM that shadows page tables it takes some 0.3 s a GiB (ffi/ram_map.c).
  gw_ram_premap: { parameters: ["pointer", "u32", "u32"], result: "i32", nonblocking: true },
  // int gw_ram_stat(const gw_ram *ram, struct gw_ram_stat *out)
  gw_ram_stat: { parameters: ["pointer", "buffer"], result: "i32" },

  // int gw_dir_lock(const char *path)
  gw_dir_lock: { parameters: ["buffer"], result: "i32" },
  // int gw_dir_unlock(int fd)
  gw_dir_unlock: { parameters: ["i32"], result: "i32" },
  // int gw_dir_make(const char *path, uint32_t mode)
  gw_dir_make: { parameters: ["buffer", "u32"], result: "i32" },
  // int gw_dir_info(const char *path, uint8_t *real, uint32_t cap, uint32_t *info)
  gw_dir_info: { parameters: ["buffer", "buffer", "u32", "buffer"], result: "i32" },
  // int gw_listener_nodelay(uint16_t port)
  gw_listener_nodelay: { parameters: ["u16"], result: "i32" },
  // int gw_socket_find(uint16_t local_port, uint16_t peer_port)
  gw_socket_find: { parameters: ["u16", "u16"], result: "i32" },
  // int gw_socket_measure(int32_t fd, uint16_t local_port, uint16_t peer_port, uint64_t *out)
  gw_socket_measure: { parameters: ["i32", "u16", "u16", "buffer"], result: "i32" },
  // int gw_socket_send_buffer(int32_t fd, uint16_t local_port, uint16_t peer_port, int32_t bytes)
  gw_socket_send_buffer: { parameters: ["i32", "u16", "u16", "i32"], result: "i32" },
  // int gw_set_thread_priorities(int32_t pid, int32_t nice, uint32_t slice_us)
  gw_set_thread_priorities: { parameters: ["i32", "i32", "u32"], result: "i32" },

  // void gw_hash_pages(const uint8_t *buf, uint32_t count, uint64_t seed, uint64_t *hashes, uint8_t *is_zero)
  gw_hash_pages: { parameters: ["buffer", "u32", "u64", "buffer", "buffer"], result: "void" },
  // uint64_t gw_zero_page_hash(uint64_t seed)
  gw_zero_page_hash: { parameters: ["u64"], result: "u64" },
  // void gw_digest(const uint64_t *hashes, uint32_t count, uint64_t seed, uint8_t *out)
  gw_digest: { parameters: ["buffer", "u32", "u64", "buffer"], result: "void" },
  // int32_t gw_contents_digest(const uint32_t *ids, uint32_t count, const uint64_t *hashes,
  //                            uint32_t contents, uint32_t zero_id, uint64_t zero_hash,
  //                            uint64_t seed, uint8_t *out)
  gw_contents_digest: {
    parameters: ["buffer", "u32", "buffer", "u32", "u32", "u64", "u64", "buffer"],
    result: "i32",
  },

  // uint32_t gw_compress_bound(uint32_t len)
  gw_compress_bound: { parameters: ["u32"], result: "u32" },
  // int gw_compress(const uint8_t *src, uint32_t len, uint8_t *dst, uint32_t cap, int32_t level,
  //                 uint64_t *ns)
  gw_compress: { parameters: ["buffer", "u32", "buffer", "u32", "i32", "buffer"], result: "i32" },
  // int gw_compress_job_new(gw_compress_job **out)
  gw_compress_job_new: { parameters: ["buffer"], result: "i32" },
  // int gw_compress_job_start(gw_compress_job *job, const uint8_t *src, uint32_t len, uint8_t *dst,
  //                           uint32_t cap, int32_t level)
  gw_compress_job_start: {
    parameters: ["pointer", "buffer", "u32", "buffer", "u32", "i32"],
    result: "i32",
  },
  // int gw_compress_job_finish(gw_compress_job *job, uint64_t *ns)
  gw_compress_job_finish: { parameters: ["pointer", "buffer"], result: "i32" },
  // void gw_compress_job_free(gw_compress_job *job)
  gw_compress_job_free: { parameters: ["pointer"], result: "void" },
  // int gw_decompress(const uint8_t *src, uint32_t len, uint8_t *dst, uint32_t expected)
  gw_decompress: { parameters: ["buffer", "u32", "buffer", "u32"], result: "i32" },

  // void gw_chunk_features(const uint8_t *buf, const uint8_t *kinds, uint32_t count,
  //                        uint32_t kind_mask, uint32_t *features)
  gw_chunk_features: { parameters: ["buffer", "buffer", "u32", "u32", "buffer"], result: "void" },
  // uint32_t gw_ram_delta(gw_ram *ram, uint32_t page, uint64_t seed, uint64_t expected,
  //                       uint8_t *target, uint32_t max_words)
  gw_ram_delta: { parameters: ["pointer", "u32", "u64", "u64", "buffer", "u32"], result: "u32" },
  // int gw_ram_undelta(gw_ram *const *src, const uint32_t *src_pages, uint32_t count,
  //                    uint8_t *data, uint32_t data_pages, const uint32_t *slots, uint32_t *bad)
  gw_ram_undelta: {
    parameters: ["buffer", "buffer", "u32", "buffer", "u32", "buffer", "buffer"],
    result: "i32",
  },

  // int gw_index_new(uint64_t seed, uint32_t hash_bits, gw_index **out)
  gw_index_new: { parameters: ["u64", "u32", "buffer"], result: "i32" },
  // void gw_index_free(gw_index *index)
  gw_index_free: { parameters: ["pointer"], result: "void" },
  // int gw_index_add_guest(gw_index *index, gw_ram *ram)
  gw_index_add_guest: { parameters: ["pointer", "pointer"], result: "i32" },
  // int gw_index_scan(gw_index *index, uint32_t guest, uint32_t first, uint32_t count,
  //                   const uint8_t *mask, uint32_t flags, uint8_t *buf, uint8_t *kinds, uint32_t *ids,
  //                   uint64_t *stats)
  gw_index_scan: {
    parameters: [
      "pointer",
      "u32",
      "u32",
      "u32",
      "buffer",
      "u32",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
    ],
    result: "i32",
  },
  // int gw_memory_advise_huge(void *buf, uint64_t len)
  gw_memory_advise_huge: { parameters: ["buffer", "u64"], result: "i32" },
  // void gw_scan_threads_start(uint32_t threads)
  gw_scan_threads_start: { parameters: ["u32"], result: "void" },
  // int gw_index_count_changed(gw_index *index, uint32_t guest, uint32_t stride, uint32_t offset)
  gw_index_count_changed: { parameters: ["pointer", "u32", "u32", "u32"], result: "i32" },
  // void gw_index_set_threads(gw_index *index, uint32_t threads)
  gw_index_set_threads: { parameters: ["pointer", "u32"], result: "void" },
  // void gw_index_set_first_reads(gw_index *index, uint32_t way)
  gw_index_set_first_reads: { parameters: ["pointer", "u32"], result: "void" },
  // uint64_t gw_total_memory(void)
  gw_total_memory: { parameters: [], result: "u64" },
  // const uint64_t *gw_index_page_hashes(const gw_index *index, uint32_t guest)
  gw_index_page_hashes: { parameters: ["pointer", "u32"], result: "pointer" },
  // const uint32_t *gw_index_page_contents(const gw_index *index, uint32_t guest)
  gw_index_page_contents: { parameters: ["pointer", "u32"], result: "pointer" },
  // uint32_t gw_index_guest_pages(const gw_index *index, uint32_t guest)
  gw_index_guest_pages: { parameters: ["pointer", "u32"], result: "u32" },
  // uint32_t gw_index_contents(const gw_index *index)
  gw_index_contents: { parameters: ["pointer"], result: "u32" },
  // uint64_t gw_index_memory(const gw_index *index)
  gw_index_memory: { parameters: ["pointer"], result: "u64" },

  // int gw_soft_dirty_supported(void)
  gw_soft_dirty_supported: { parameters: [], result: "i32" },
  // int gw_soft_dirty_clear(int32_t pid)
  gw_soft_dirty_clear: { parameters: ["i32"], result: "i32" },
  // int gw_pagemap_read(int32_t pid, uint64_t addr, uint32_t pages, uint8_t *flags, uint32_t want)
  gw_pagemap_read: { parameters: ["i32", "u64", "u32", "buffer", "u32"], result: "i32" },
  // int gw_pagemap_scan_supported(void)
  gw_pagemap_scan_supported: { parameters: [], result: "i32" },
  // int gw_pagemap_scan(int32_t pid, uint64_t addr, uint32_t pages, uint8_t *flags, uint32_t want)
  gw_pagemap_scan: { parameters: ["i32", "u64", "u32", "buffer", "u32"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The C functions, typed. */
export type NativeSymbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let opened: Deno.DynamicLibrary<typeof SYMBOLS> | undefined;
let openedPath = "";

/** A path to try, and where it came from (for the error that lists them). */
interface Candidate {
  path: string;
  origin: string;
}

function granted(descriptor: Deno.PermissionDescriptor): boolean {
  return Deno.permissions.querySync(descriptor).state === "granted";
}

function envOverride(): string | undefined {
  if (!granted({ name: "env", variable: "GANGWAY_LIB" })) return undefined;
  return Deno.env.get("GANGWAY_LIB") || undefined;
}

/** The cache directory, or why it cannot be used (asked without prompting). */
function cacheDir(): { dir: string } | { why: string } {
  const denied = CACHE_DIR_VARIABLES.filter((variable) => !granted({ name: "env", variable }));
  if (denied.length > 0) return { why: `needs --allow-env=${denied.join(",")}` };
  try {
    return { dir: defaultCacheDir() };
  } catch (error) {
    return { why: errorMessage(error) };
  }
}

function candidates(cache: { dir: string } | { why: string }): Candidate[] {
  const list: Candidate[] = [];
  const local = new URL("../../ffi/build/libgangway.so", import.meta.url);
  if (local.protocol === "file:") list.push({ path: fileURLToPath(local), origin: "local build" });
  if ("dir" in cache) list.push({ path: cachedLibraryPath(cache.dir), origin: "cache" });
  return list;
}

/** Opens a candidate of this ABI, or says in `tried` why not. */
function openCandidate(
  { path, origin }: Candidate,
  tried: string[],
): Deno.DynamicLibrary<typeof SYMBOLS> | undefined {
  let library: Deno.DynamicLibrary<typeof SYMBOLS>;
  try {
    library = Deno.dlopen(path, SYMBOLS);
  } catch (error) {
    const message = errorMessage(error);
    const why = message.includes("No such file or directory") ? "not found" : message;
    tried.push(`  ${path} (${origin}): ${why}`);
    return undefined;
  }
  const abi = library.symbols.gw_abi_version();
  if (abi !== ABI_VERSION) {
    library.close();
    tried.push(`  ${path} (${origin}): ABI ${abi}, expected ${ABI_VERSION} (stale build)`);
    return undefined;
  }
  openedPath = path;
  return library;
}

/**
 * Builds the library into the cache when the permissions allow it.
 *
 * @returns the path built, or undefined with the reason pushed to `tried`
 */
function buildIntoCache(cache: { dir: string } | { why: string }, tried: string[]) {
  if (!("dir" in cache)) {
    tried.push(`  build into the cache: ${cache.why}`);
    return undefined;
  }
  const denied = [
    granted({ name: "run", command: "gcc" }) ? "" : "--allow-run=gcc",
    granted({ name: "read", path: cache.dir }) ? "" : `--allow-read=${cache.dir}`,
    granted({ name: "write", path: cache.dir }) ? "" : `--allow-write=${cache.dir}`,
  ].filter((flag) => flag !== "");
  if (denied.length > 0) {
    tried.push(`  build into the cache: needs ${denied.join(" ")}`);
    return undefined;
  }
  try {
    return buildCachedLibrary(cache.dir);
  } catch (error) {
    tried.push(`  build into the cache: ${errorMessage(error)}`);
    return undefined;
  }
}

/**
 * The library's functions, opening it on the first call (and building it
 * into the cache when no build is found).
 *
 * @returns the typed C symbols
 * @throws if no candidate path holds a loadable library of this ABI and none could be built
 */
export function native(): NativeSymbols {
  if (opened) return opened.symbols;
  const tried: string[] = [];
  const override = envOverride();
  if (override) {
    // A library asked for by name is never silently replaced by another one.
    opened = openCandidate({ path: override, origin: "env GANGWAY_LIB" }, tried);
    if (opened) return opened.symbols;
    throw new Error(`Cannot load the gangway C library named by env GANGWAY_LIB:\n${tried[0]}`);
  }
  tried.push("  env GANGWAY_LIB: not set");
  const cache = cacheDir();
  for (const candidate of candidates(cache)) {
    opened = openCandidate(candidate, tried);
    if (opened) return opened.symbols;
  }
  const built = buildIntoCache(cache, tried);
  if (built) {
    opened = openCandidate({ path: built, origin: "built into the cache" }, tried);
    if (opened) return opened.symbols;
  }
  throw new Error(
    `Cannot load the gangway C library: no usable library found. Tried:\n${tried.join("\n")}\n` +
      "It is built on first use with gcc and the headers of libxxhash-dev and libzstd-dev " +
      "(given --allow-run=gcc, --allow-read, --allow-write and --allow-env for the cache); " +
      "or build it with `deno task build` in a checkout, " +
      "or point GANGWAY_LIB at a built libgangway.so",
  );
}

/**
 * The path of the library {@linkcode native} opened (opening it first):
 * what a child process is given as env GANGWAY_LIB, so that it loads the
 * same build without looking for one.
 *
 * @returns the library's path
 * @throws as {@linkcode native} does
 */
export function nativeLibraryPath(): string {
  native();
  return openedPath;
}
