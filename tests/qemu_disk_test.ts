import { assert, assertEquals, assertNotEquals, assertRejects, assertThrows } from "./_assert.ts";
import { join } from "node:path";
import {
  DEBIAN_RECIPES,
  imageFiles,
  mmdebstrapArgs,
  recipeKey,
} from "../src/qemu/_debian_recipes.ts";
import { diskBytes } from "../src/qemu/_debian_image.ts";
import { HEARTBEAT_SCRIPT } from "../src/qemu/_guest_init.ts";
import { IMAGE_NAMES, imageWorkloads } from "../src/qemu/guest_image.ts";
import { parseHeartbeats, waitForWorkload } from "../src/qemu/heartbeat.ts";
import { qemuArgs, type QemuMachine } from "../src/qemu/qemu_args.ts";
import { parseCommandLine } from "../src/qemu/qemu_command_line.ts";

const DISK_MACHINE: QemuMachine = {
  memoryMiB: 512,
  backendId: "gangway-ram",
  cpus: 1,
  accelerator: "tcg",
  image: { kernel: "/c/vmlinuz-6.1.0-57-cloud-amd64", initrd: "/c/initrd.img", kernelVersion: "" },
  kernelArgs: ["console=ttyS0", "panic=-1", "root=/dev/vda", "rw"],
  disks: [
    { path: "/dev/shm/vm1.qcow2", format: "qcow2", base: "/c/disk.raw" },
    { path: "/srv/data.raw", format: "raw", readOnly: true },
  ],
  extraArgs: [],
  qemuBinary: "qemu-system-x86_64",
};
const INSTANCE = {
  name: "vm1",
  ramPath: "/dev/shm/gangway-vm1",
  qmpPath: "/tmp/r/vm1.qmp",
  serialLog: "/tmp/r/vm1.serial.log",
  incoming: false,
};

Deno.test("qemuArgs() attaches each disk as a virtio drive that names its base", () => {
  const args = qemuArgs(DISK_MACHINE, INSTANCE);
  const drives = args.flatMap((arg, i) => args[i - 1] === "-drive" ? [arg] : []);
  assertEquals(drives, [
    "id=disk0,if=virtio,file=/dev/shm/vm1.qcow2,format=qcow2," +
    "backing.driver=raw,backing.file.filename=/c/disk.raw,backing.file.drop-cache=off",
    "id=disk1,if=virtio,file=/srv/data.raw,format=raw,readonly=on",
  ]);
  assertThrows(
    () =>
      qemuArgs(
        { ...DISK_MACHINE, disks: [{ path: "/a.qcow2,cache=none", format: "qcow2" }] },
        INSTANCE,
      ),
    Error,
    `disk 0 "/a.qcow2,cache=none" has unsafe characters`,
  );
  assertThrows(
    () =>
      qemuArgs({ ...DISK_MACHINE, disks: [{ path: "/a", format: "raw", base: "/b" }] }, INSTANCE),
    Error,
    "only a qcow2 overlay has a base",
  );
});

Deno.test("parseCommandLine() reads back the disks qemuArgs() wrote", () => {
  const { machine, instance } = parseCommandLine(
    "qemu-system-x86_64",
    qemuArgs(DISK_MACHINE, INSTANCE),
  );
  assertEquals(machine.disks, DISK_MACHINE.disks);
  assertEquals(machine.extraArgs, []);
  assertEquals(machine.kernelArgs, DISK_MACHINE.kernelArgs);
  assertEquals(instance.name, "vm1");
  // A guest started by hand with the short form reads the same way.
  const byHand = qemuArgs({ ...DISK_MACHINE, disks: [] }, INSTANCE);
  const parsed = parseCommandLine("qemu-system-x86_64", [
    ...byHand,
    "-drive",
    "file=/srv/vm.qcow2,format=qcow2,if=virtio",
  ]);
  assertEquals(parsed.machine.disks, [{ path: "/srv/vm.qcow2", format: "qcow2" }]);
});

Deno.test("parseCommandLine() refuses a drive a destination could not be trusted to copy", () => {
  const base = qemuArgs({ ...DISK_MACHINE, disks: [] }, INSTANCE);
  const refuse = (drive: string, message: string) =>
    assertThrows(
      () => parseCommandLine("qemu-system-x86_64", [...base, "-drive", drive]),
      Error,
      message,
    );
  refuse("file=/a.qcow2,format=qcow2,if=ide", "only if=virtio");
  refuse("file=/a.img,format=vmdk,if=virtio", "format= must be raw or qcow2");
  refuse("file=/a.img,format=raw,if=virtio,cache=none", "cache not supported");
  refuse("file=/a.qcow2,format=qcow2,if=virtio,backing.file.filename=/b", "go together");
  refuse("format=raw,if=virtio", "no file=");
});

Deno.test("Debian recipes: each has its kernel, and a change of any script gives a new key", async () => {
  const keys = new Set<string>();
  for (const recipe of Object.values(DEBIAN_RECIPES)) {
    const include = mmdebstrapArgs(recipe, "/tmp/x").find((arg) => arg.startsWith("--include="))!;
    assert(include.includes(recipe.kernelPackage), include);
    for (const p of ["systemd-sysv", "udev", "initramfs-tools", ...recipe.packages]) {
      assert(include.split(/[=,]/).includes(p), `${recipe.name} lacks ${p}: ${include}`);
    }
    keys.add(await recipeKey(recipe));
    assertEquals(await recipeKey(recipe), await recipeKey({ ...recipe }));
  }
  assertEquals(keys.size, Object.keys(DEBIAN_RECIPES).length);
  const debian = DEBIAN_RECIPES.debian;
  assertNotEquals(
    await recipeKey(debian),
    await recipeKey({ ...debian, packages: ["stress-ng"] }),
  );
  const heartbeat = imageFiles(debian).find((f) => f.path.endsWith("/gangway-heartbeat"));
  assert(heartbeat?.kind === "file" && heartbeat.text.includes(HEARTBEAT_SCRIPT));
  assertEquals(
    imageFiles(debian).find((f) => f.path.endsWith("/serial-getty@ttyS0.service")),
    {
      kind: "symlink",
      path: "/etc/systemd/system/serial-getty@ttyS0.service",
      target: "/dev/null",
    },
  );
  assertEquals(imageWorkloads("debian"), ["idle", "busy", "disk"]);
  assertEquals(imageWorkloads("debian-db"), ["idle", "busy", "disk", "pgbench"]);
  assertEquals(imageWorkloads("debian-web"), ["idle", "busy", "disk", "web"]);
  assertEquals(imageWorkloads("busybox"), ["idle", "busy"]);
  assertEquals(IMAGE_NAMES[0], "busybox");
});

Deno.test("diskBytes() leaves room to grow, in whole 256 MiB", () => {
  const MiB = 2 ** 20;
  assertEquals(diskBytes(350 * MiB), 1280 * MiB);
  assertEquals(diskBytes(0), 768 * MiB);
  assert(diskBytes(530 * MiB) >= 530 * MiB * 1.25 + 768 * MiB);
});

Deno.test("HEARTBEAT_SCRIPT runs under dash, the /bin/sh of the Debian images", async () => {
  const dir = await Deno.makeTempDir({ prefix: "gangway-heartbeat-" });
  // setsid: the script's loops run in the background; its process group is ended as a whole.
  const child = new Deno.Command("setsid", {
    args: ["dash", "-c", HEARTBEAT_SCRIPT],
    cwd: dir,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  try {
    let text = "";
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    while (parseHeartbeats(text).length < 2) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`The heartbeat ended: ${text}`);
      text += value;
    }
    reader.releaseLock();
    assert(/^gangway-ready mode=idle blob_mib=16 md5=[0-9a-f]{32}$/m.test(text), text);
    assertEquals(parseHeartbeats(text).slice(0, 2).map((b) => b.counter), [1, 2]);
    assertEquals((await Deno.stat(join(dir, "blob"))).size, 16 * 2 ** 20);
  } finally {
    Deno.kill(-child.pid, "SIGKILL");
    await child.status;
    await child.stdout.cancel().catch(() => {});
    await child.stderr.cancel();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("waitForWorkload() returns once the load runs and names a failure", async () => {
  const log = await Deno.makeTempFile({ prefix: "gangway-serial-" });
  try {
    await Deno.writeTextFile(log, "gangway-heartbeat 3 checksum-ok 1\r\n");
    const waiting = waitForWorkload(log, { timeoutMs: 10_000, pollMs: 20 });
    await Deno.writeTextFile(log, "gangway-workload pgbench running scale=4\r\n", { append: true });
    assertEquals(await waiting, { mode: "pgbench", detail: "scale=4" });
    await Deno.writeTextFile(log, "gangway-workload web failed: no wrk in this image\r\n");
    await assertRejects(
      () => waitForWorkload(log, { timeoutMs: 10_000, pollMs: 20 }),
      Error,
      "it failed: no wrk in this image",
    );
    await Deno.writeTextFile(log, "");
    await assertRejects(
      () => waitForWorkload(log, { timeoutMs: 50, pollMs: 20 }),
      Error,
      "none in 50 ms",
    );
  } finally {
    await Deno.remove(log);
  }
});
