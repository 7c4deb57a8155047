/**
 * The C page library (`ffi/`), opened on first use.
 *
 * Lookup order: the path in env `GANGWAY_LIB`, then the local build next to
 * this module (`ffi/build/libgangway.so`). Importing this module opens
 * nothing and needs no permission; the first call needs `--allow-ffi` (and
 * `--allow-env=GANGWAY_LIB` for the override to be seen).
 *
 * @module
 */

/** Must equal GW_ABI_VERSION in ffi/gangway.h: a stale build is refused. */
const ABI_VERSION = 6;

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
  // int gw_ram_stat(const gw_ram *ram, struct gw_ram_stat *out)
  gw_ram_stat: { parameters: ["pointer", "buffer"], result: "i32" },

  // int gw_dir_lock(const char *path)
  gw_dir_lock: { parameters: ["buffer"], result: "i32" },
  // int gw_dir_unlock(int fd)
  gw_dir_unlock: { parameters: ["i32"], result: "i32" },

  // void gw_hash_pages(const uint8_t *buf, uint32_t count, uint64_t seed, uint64_t *hashes, uint8_t *is_zero)
  gw_hash_pages: { parameters: ["buffer", "u32", "u64", "buffer", "buffer"], result: "void" },
  // uint64_t gw_zero_page_hash(uint64_t seed)
  gw_zero_page_hash: { parameters: ["u64"], result: "u64" },
  // void gw_digest(const uint64_t *hashes, uint32_t count, uint64_t seed, uint8_t *out)
  gw_digest: { parameters: ["buffer", "u32", "u64", "buffer"], result: "void" },

  // uint32_t gw_compress_bound(uint32_t len)
  gw_compress_bound: { parameters: ["u32"], result: "u32" },
  // int gw_compress(const uint8_t *src, uint32_t len, uint8_t *dst, uint32_t cap, int32_t level)
  gw_compress: { parameters: ["buffer", "u32", "buffer", "u32", "i32"], result: "i32" },
  // int gw_decompress(const uint8_t *src, uint32_t len, uint8_t *dst, uint32_t expected)
  gw_decompress: { parameters: ["buffer", "u32", "buffer", "u32"], result: "i32" },

  // int gw_index_new(uint64_t seed, uint32_t hash_bits, gw_index **out)
  gw_index_new: { parameters: ["u64", "u32", "buffer"], result: "i32" },
  // void gw_index_free(gw_index *index)
  gw_index_free: { parameters: ["pointer"], result: "void" },
  // int gw_index_add_guest(gw_index *index, gw_ram *ram)
  gw_index_add_guest: { parameters: ["pointer", "pointer"], result: "i32" },
  // int gw_index_scan(gw_index *index, uint32_t guest, uint32_t first, uint32_t count, uint32_t flags,
  //                   const uint8_t *mask, uint8_t *buf, uint8_t *kinds, uint32_t *ids, uint64_t *stats)
  gw_index_scan: {
    parameters: [
      "pointer",
      "u32",
      "u32",
      "u32",
      "u32",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
    ],
    result: "i32",
  },
  // void gw_index_set_threads(gw_index *index, uint32_t threads)
  gw_index_set_threads: { parameters: ["pointer", "u32"], result: "void" },
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

function envOverride(): string | undefined {
  const access = Deno.permissions.querySync({ name: "env", variable: "GANGWAY_LIB" });
  return access.state === "granted" ? Deno.env.get("GANGWAY_LIB") || undefined : undefined;
}

function candidates(): { path: string; origin: string }[] {
  const list: { path: string; origin: string }[] = [];
  const override = envOverride();
  if (override) list.push({ path: override, origin: "env GANGWAY_LIB" });
  const local = new URL("../../ffi/build/libgangway.so", import.meta.url);
  if (local.protocol === "file:") list.push({ path: local.pathname, origin: "local build" });
  return list;
}

/**
 * The library's functions, opening it on the first call.
 *
 * @returns the typed C symbols
 * @throws if no candidate path holds a loadable library of this ABI
 */
export function native(): NativeSymbols {
  if (opened) return opened.symbols;
  const tried: string[] = [];
  for (const { path, origin } of candidates()) {
    let library: Deno.DynamicLibrary<typeof SYMBOLS>;
    try {
      library = Deno.dlopen(path, SYMBOLS);
    } catch (error) {
      tried.push(`  ${path} (${origin}): ${error instanceof Error ? error.message : error}`);
      continue;
    }
    const abi = library.symbols.gw_abi_version();
    if (abi !== ABI_VERSION) {
      library.close();
      tried.push(`  ${path} (${origin}): ABI ${abi}, expected ${ABI_VERSION} (stale build)`);
      continue;
    }
    opened = library;
    return library.symbols;
  }
  if (!envOverride()) tried.unshift("  env GANGWAY_LIB: not set");
  throw new Error(
    `Cannot load the gangway C library: no usable library found. Tried:\n${tried.join("\n")}\n` +
      "Build it with `deno task build` (needs gcc and libxxhash-dev), " +
      "or point GANGWAY_LIB at a built libgangway.so",
  );
}
