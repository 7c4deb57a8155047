import { assert, assertEquals, assertNotEquals, assertThrows } from "./_assert.ts";
import { join } from "node:path";
import { writeCpio } from "../src/qemu/_cpio.ts";
import { INIT_SCRIPT, workloadArgs } from "../src/qemu/_guest_init.ts";
import { initramfsName } from "../src/qemu/_initramfs.ts";
import { ensureGuestImage } from "../src/qemu/guest_image.ts";
import { parseHeartbeats } from "../src/qemu/heartbeat.ts";
import { qemuArgs, type QemuMachine } from "../src/qemu/qemu_args.ts";
import { testImage } from "./qemu_helpers.ts";

async function busyboxCpioList(archive: Uint8Array): Promise<string> {
  const child = new Deno.Command("busybox", {
    args: ["cpio", "-tv"],
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(archive);
  await writer.close();
  const { stdout } = await child.output();
  return new TextDecoder().decode(stdout);
}

/** Name → [rdevmajor, rdevminor] of every entry of a newc archive. */
function newcDevices(archive: Uint8Array): Map<string, [number, number]> {
  const text = new TextDecoder("latin1").decode(archive);
  const field = (at: number, i: number) =>
    parseInt(text.slice(at + 6 + 8 * i, at + 14 + 8 * i), 16);
  const pad4 = (n: number) => (n + 3) & ~3;
  const devices = new Map<string, [number, number]>();
  for (let at = 0; text.startsWith("070701", at);) {
    const nameSize = field(at, 11);
    const name = text.slice(at + 110, at + 110 + nameSize - 1);
    devices.set(name, [field(at, 9), field(at, 10)]);
    at = pad4(at + 110 + nameSize) + pad4(field(at, 6));
  }
  return devices;
}

Deno.test("writeCpio() writes an archive busybox cpio lists, device node included", async () => {
  const archive = writeCpio([
    { kind: "dir", path: "dev" },
    { kind: "chardev", path: "dev/console", major: 5, minor: 1 },
    { kind: "file", path: "init", data: new TextEncoder().encode("#!/bin/sh\n"), mode: 0o755 },
    { kind: "symlink", path: "sh", target: "busybox" },
  ]);
  assertEquals(archive.length % 4, 0);
  const listing = await busyboxCpioList(archive);
  assert(/^drwxr-xr-x .* dev$/m.test(listing), listing);
  assert(/^crw------- .* dev\/console$/m.test(listing), listing);
  // busybox does not list device numbers: read them from the headers.
  assertEquals(newcDevices(archive).get("dev/console"), [5, 1]);
  assert(/^-rwxr-xr-x .* 10 .* init$/m.test(listing), listing);
  assert(/^lrwxrwxrwx .* sh -> busybox$/m.test(listing), listing);
});

Deno.test("initramfsName() changes when the init script changes", async () => {
  const busybox = new Uint8Array([1, 2, 3]);
  const a = await initramfsName(busybox, INIT_SCRIPT);
  assertEquals(a, await initramfsName(busybox, INIT_SCRIPT));
  assertNotEquals(a, await initramfsName(busybox, INIT_SCRIPT + "\n# edited\n"));
  assertNotEquals(a, await initramfsName(new Uint8Array([1, 2, 4]), INIT_SCRIPT));
});

Deno.test("ensureGuestImage() run twice at once builds one cached image", async () => {
  const shared = await testImage();
  const cacheDir = await Deno.makeTempDir({ prefix: "gangway-image-test-" });
  try {
    // Seed the kernel so that only the initramfs is built here (no download).
    await Deno.mkdir(join(cacheDir, "guest"));
    await Deno.link(shared.kernel, join(cacheDir, "guest", `vmlinuz-${shared.kernelVersion}`));
    const [a, b] = await Promise.all([
      ensureGuestImage({ cacheDir }),
      ensureGuestImage({ cacheDir }),
    ]);
    assertEquals(a, b);
    assertEquals(
      (await Deno.readFile(a.initrd)).length,
      (await Deno.readFile(shared.initrd)).length,
    );
    const names = [...Deno.readDirSync(join(cacheDir, "guest"))].map((e) => e.name).sort();
    assertEquals(names, [a.initrd.split("/").at(-1), `vmlinuz-${shared.kernelVersion}`].sort());
    const listing = await busyboxCpioList(await Deno.readFile(a.initrd));
    for (const path of ["init", "bin/busybox", "bin/sh", "dev/console"]) {
      assert(new RegExp(` ${path}( ->.*)?$`, "m").test(listing), listing);
    }
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
  }
});

Deno.test("parseHeartbeats() reads every heartbeat and skips torn lines", () => {
  const log = [
    "[    2.8] random: crng init done",
    "gangway-ready mode=idle blob_mib=16 md5=d75d",
    "gangway-heartbeat 1 checksum-pending 0",
    "gangway-heartbeat 2 checksum-ok 1",
    "gangway-heartbe", // the guest moved mid-line
    "at 3 checksum-ok 1",
    "gangway-heartbeat 4 checksum-bad 2",
    "",
  ].join("\r\n");
  assertEquals(parseHeartbeats(log), [
    { counter: 1, checksum: "pending", checks: 0 },
    { counter: 2, checksum: "ok", checks: 1 },
    { counter: 4, checksum: "bad", checks: 2 },
  ]);
});

Deno.test("workloadArgs() passes the workload on the kernel command line", () => {
  assertEquals(workloadArgs(), ["gangway.mode=idle"]);
  assertEquals(
    workloadArgs({ mode: "busy", blobMiB: 8, scratchMiB: 4, checkEverySeconds: 2 }),
    [
      "gangway.mode=busy",
      "gangway.blob_mib=8",
      "gangway.scratch_mib=4",
      "gangway.check_every=2",
    ],
  );
  assertThrows(() => workloadArgs({ blobMiB: 1.5 }), RangeError, "1.5 is not a whole number");
});

Deno.test("qemuArgs() shares the RAM file (unless anonymous) and makes a destination wait paused", () => {
  const machine: QemuMachine = {
    memoryMiB: 128,
    backendId: "gangway-ram",
    cpus: 1,
    accelerator: "tcg",
    image: { kernel: "/k/vmlinuz", initrd: "/k/initrd", kernelVersion: "6.1.0-56-amd64" },
    kernelArgs: ["console=ttyS0", "panic=-1"],
    extraArgs: [],
    qemuBinary: "qemu-system-x86_64",
  };
  const instance = {
    name: "vm1",
    ramPath: "/dev/shm/gangway-vm1",
    qmpPath: "/tmp/r/vm1.qmp",
    serialLog: "/tmp/r/vm1.serial.log",
  };
  const source = qemuArgs(machine, { ...instance, incoming: false }).join(" ");
  assert(
    / -object memory-backend-file,id=gangway-ram,size=128M,mem-path=\/dev\/shm\/gangway-vm1,share=on,align=2M /
      .test(source),
    source,
  );
  assert(/ -machine pc,memory-backend=gangway-ram /.test(source), source);
  assert(/ -append console=ttyS0 panic=-1 /.test(source), source);
  assert(!source.includes("-incoming"));
  const destination = qemuArgs(machine, { ...instance, incoming: true }).join(" ");
  assert(destination.endsWith(" -S -incoming defer"));
  // QEMU's default RAM, for QEMU's own migration: no backend, no file, on either end.
  for (const incoming of [false, true]) {
    const anonymous = qemuArgs({ ...machine, anonymousRam: true }, { ...instance, incoming });
    assert(/ -machine pc -m 128M -smp 1 -kernel /.test(` ${anonymous.join(" ")} `), `${anonymous}`);
    assert(!anonymous.some((arg) => arg.includes("memory-backend") || arg.includes("/dev/shm")));
  }
  assertThrows(
    () => qemuArgs(machine, { ...instance, ramPath: "/dev/shm/a,share=off", incoming: false }),
    Error,
    `Cannot start guest "vm1": ramPath "/dev/shm/a,share=off" has unsafe characters`,
  );
});
