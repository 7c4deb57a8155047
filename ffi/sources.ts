/**
 * The C library's sources as text, imported as modules.
 *
 * They are part of the module graph on purpose: a script that imports
 * gangway by URL gets them fetched, cached and locked by Deno along with
 * the TypeScript, so the library can be built on that machine from exactly
 * the sources this version of the TypeScript was written against (see
 * `buildCachedLibrary` in ./build.ts). Importing this module needs no
 * permission.
 *
 * @module
 */
import compressC from "./compress.c" with { type: "text" };
import compressJobC from "./compress_job.c" with { type: "text" };
import dirC from "./dir.c" with { type: "text" };
import firstReadC from "./first_read.c" with { type: "text" };
import gangwayH from "./gangway.h" with { type: "text" };
import hashC from "./hash.c" with { type: "text" };
import indexC from "./index.c" with { type: "text" };
import indexInternalH from "./index_internal.h" with { type: "text" };
import indexScanC from "./index_scan.c" with { type: "text" };
import internalH from "./internal.h" with { type: "text" };
import memoryC from "./memory.c" with { type: "text" };
import pagemapC from "./pagemap.c" with { type: "text" };
import poolC from "./pool.c" with { type: "text" };
import priorityC from "./priority.c" with { type: "text" };
import ramC from "./ram.c" with { type: "text" };
import ramMapC from "./ram_map.c" with { type: "text" };
import ramWriteC from "./ram_write.c" with { type: "text" };
import similarC from "./similar.c" with { type: "text" };
import socketC from "./socket.c" with { type: "text" };

/** The files compiled into the library, in the order they are given to the compiler. */
export const LIBRARY_SOURCES: readonly string[] = [
  "ram.c",
  "ram_map.c",
  "ram_write.c",
  "dir.c",
  "hash.c",
  "compress.c",
  "compress_job.c",
  "index.c",
  "index_scan.c",
  "first_read.c",
  "memory.c",
  "pagemap.c",
  "pool.c",
  "priority.c",
  "similar.c",
  "socket.c",
];

/** The headers the sources include. */
export const LIBRARY_HEADERS: readonly string[] = ["gangway.h", "internal.h", "index_internal.h"];

/** Every file of the library by name (sources and headers), as text. */
export const LIBRARY_FILES: Readonly<Record<string, string>> = {
  "ram.c": ramC,
  "ram_map.c": ramMapC,
  "ram_write.c": ramWriteC,
  "dir.c": dirC,
  "hash.c": hashC,
  "compress.c": compressC,
  "compress_job.c": compressJobC,
  "index.c": indexC,
  "index_scan.c": indexScanC,
  "first_read.c": firstReadC,
  "memory.c": memoryC,
  "pagemap.c": pagemapC,
  "pool.c": poolC,
  "priority.c": priorityC,
  "similar.c": similarC,
  "socket.c": socketC,
  "gangway.h": gangwayH,
  "internal.h": internalH,
  "index_internal.h": indexInternalH,
};
