import { gunzipSync } from "node:zlib";
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import {
  clearSoftDirty,
  PagemapFlag,
  pagemapScanSupported,
  readPageFlags,
  softDirtySupported,
} from "../src/native/pagemap.ts";
import { NativeError } from "../src/native/errno.ts";
import { PAGE_SIZE } from "../src/native/ram_file.ts";

const softDirty = softDirtySupported();
const scanIoctl = pagemapScanSupported();

/** The running kernel's build configuration, when it can be read; undefined otherwise. */
function kernelConfig(): string | undefined {
  try {
    return new TextDecoder().decode(gunzipSync(Deno.readFileSync("/proc/config.gz")));
  } catch {
    try {
      return Deno.readTextFileSync(`/boot/config-${Deno.osRelease()}`);
    } catch {
      return undefined;
    }
  }
}
const config = kernelConfig();

/** A page-aligned region of this process's own memory, every page touched. */
function touchedRegion(pages: number): { bytes: Uint8Array; addr: bigint } {
  const raw = new Uint8Array((pages + 1) * PAGE_SIZE);
  const start = Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(raw)!));
  const offset = (PAGE_SIZE - (start % PAGE_SIZE)) % PAGE_SIZE;
  const bytes = raw.subarray(offset, offset + pages * PAGE_SIZE);
  for (let p = 0; p < pages; p++) bytes[p * PAGE_SIZE] = 1;
  return { bytes, addr: BigInt(start + offset) };
}

Deno.test({
  name: config
    ? "softDirtySupported() agrees with the kernel's CONFIG_MEM_SOFT_DIRTY"
    : "softDirtySupported() agrees with the kernel's CONFIG_MEM_SOFT_DIRTY (skipped: neither /proc/config.gz nor /boot/config-RELEASE is readable)",
  ignore: !config,
  fn() {
    const configured = /^CONFIG_MEM_SOFT_DIRTY=y$/m.test(config!);
    assertEquals(softDirty, configured, `the probe says ${softDirty}`);
  },
});

Deno.test("readPageFlags() sees this process's touched pages as present", () => {
  const { addr } = touchedRegion(8);
  const flags = readPageFlags(0, addr, 8, { want: PagemapFlag.Present | PagemapFlag.Swapped });
  assertEquals([...flags], Array(8).fill(PagemapFlag.Present));
});

Deno.test({
  name: scanIoctl
    ? "readPageFlags({ ioctl: true }) agrees with /proc/PID/pagemap"
    : "readPageFlags({ ioctl: true }) agrees with /proc/PID/pagemap (skipped: no PAGEMAP_SCAN before Linux 6.7)",
  ignore: !scanIoctl,
  fn() {
    const { addr } = touchedRegion(16);
    const want = PagemapFlag.Present | PagemapFlag.Swapped;
    assertEquals(
      [...readPageFlags(0, addr, 16, { want, ioctl: true })],
      [...readPageFlags(0, addr, 16, { want })],
    );
  },
});

Deno.test({
  name: softDirty
    ? "readPageFlags() refuses soft-dirty bits where the kernel lacks them (skipped: this kernel has them)"
    : "readPageFlags() refuses soft-dirty bits where the kernel lacks them",
  ignore: softDirty,
  fn() {
    const { addr } = touchedRegion(1);
    for (const ioctl of [false, true]) {
      const error = assertThrows(() => readPageFlags(0, addr, 1, { ioctl }), NativeError);
      assertEquals(error.code, "EOPNOTSUPP");
    }
  },
});

Deno.test({
  name: softDirty
    ? "readPageFlags() sees exactly the pages written after clearSoftDirty()"
    : "readPageFlags() sees exactly the pages written after clearSoftDirty() (skipped: kernel built without CONFIG_MEM_SOFT_DIRTY; tests/softdirty_guest_test.ts runs this path in a QEMU guest whose kernel has it)",
  ignore: !softDirty,
  fn() {
    const { bytes, addr } = touchedRegion(8);
    clearSoftDirty(0);
    bytes[2 * PAGE_SIZE] = 2;
    bytes[5 * PAGE_SIZE + 7] = 2;
    const flags = readPageFlags(0, addr, 8, { want: PagemapFlag.SoftDirty });
    assertEquals([...flags].map((f) => f !== 0), [
      false,
      false,
      true,
      false,
      false,
      true,
      false,
      false,
    ]);
  },
});

Deno.test("readPageFlags() names the process when it cannot read its pagemap", () => {
  const error = assertThrows(
    () => readPageFlags(0x3ffffff0, 0n, 1, { want: PagemapFlag.Present }),
    NativeError,
  );
  assert(error.message.includes("process 1073741808"), error.message);
  assertEquals(error.code, "ENOENT");
});
