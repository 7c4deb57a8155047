/**
 * Buffers for page work, backed by 2 MiB pages where the kernel allows.
 *
 * @module
 */
import { native } from "./library.ts";

/**
 * A zeroed buffer of `bytes` whose whole 2 MiB pages the kernel is asked
 * to back with huge pages (see ffi/memory.c) before anything touches them:
 * on these VMs the first touch of each fresh 4 KiB page costs some 13 us,
 * 50 ms for a 16 MiB buffer. Only advice: where the kernel declines (or the
 * allocator hands back memory used before), the buffer works the same.
 *
 * Requires `--allow-ffi`.
 *
 * @example
 * ```ts
 * import { hugePageBuffer } from "./memory.ts";
 * const buf = hugePageBuffer(16 << 20);
 * ```
 */
export function hugePageBuffer(bytes: number): Uint8Array {
  const buf = new Uint8Array(bytes);
  native().gw_memory_advise_huge(buf, BigInt(bytes));
  return buf;
}

/**
 * This host's physical memory in bytes, or 0 when the kernel does not say
 * (sysinfo, in C: it needs no permission beyond `--allow-ffi`).
 */
export function totalMemory(): number {
  return Number(native().gw_total_memory());
}
