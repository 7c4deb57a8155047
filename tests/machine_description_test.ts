import { join } from "node:path";
import { assertEquals, assertRejects, assertThrows } from "./_assert.ts";
import {
  checkDescription,
  DescriptionError,
  type MachineDescription,
  MAX_BASE_BYTES,
} from "../src/target/machine_description.ts";
import { sha256Hex } from "./_fixtures.ts";
import { machineOf } from "../src/target/agent_machine.ts";
import { describeMachine } from "../src/target/describe_machine.ts";
import { FileStore } from "../src/target/agent_files.ts";
import type { QemuMachine } from "../src/qemu/qemu_args.ts";

const LIMITS = { maxMemoryMiB: 4096 };
const FILE = { name: "vmlinuz-6.1.0-28-amd64", sha256: "a".repeat(64), size: 8_000_000 };
const GOOD: MachineDescription = {
  name: "vm1",
  memoryMiB: 256,
  cpus: 1,
  accelerator: "tcg",
  backendId: "gangway-ram",
  kernel: FILE,
  initrd: { ...FILE, name: "initrd.img" },
  kernelArgs: ["console=ttyS0", "panic=-1"],
};

Deno.test("checkDescription() takes a description on the allow-list as it is", () => {
  assertEquals(checkDescription(structuredClone(GOOD), LIMITS), GOOD);
});

Deno.test("checkDescription() refuses any field outside the allow-list, naming it", () => {
  const cases: [unknown, string][] = [
    [
      { ...GOOD, extraArgs: ["-chardev", "file,id=x,path=/etc/x"] },
      'field "extraArgs" is not allowed',
    ],
    [{ ...GOOD, devices: [] }, 'field "devices" is not allowed'],
    [{ ...GOOD, qemuBinary: "/bin/sh" }, 'field "qemuBinary" is not allowed'],
    [{ ...GOOD, ramPath: "/etc/passwd" }, 'field "ramPath" is not allowed'],
    [{ ...GOOD, kernel: { ...FILE, path: "/etc/shadow" } }, 'field "kernel.path" is not allowed'],
  ];
  for (const [description, message] of cases) {
    const error = assertThrows(() => checkDescription(description, LIMITS), DescriptionError);
    assertEquals(error.message.includes(message), true, error.message);
    assertEquals(error.message.includes('guest "vm1"'), true, error.message);
  }
});

Deno.test("checkDescription() refuses values a QEMU option or a path could be smuggled in", () => {
  const cases: [unknown, string][] = [
    [{ ...GOOD, name: "../vm1" }, 'field "name"'],
    [{ ...GOOD, name: "vm1,share=off" }, 'field "name"'],
    [{ ...GOOD, backendId: "mem,mem-path=/etc/x" }, 'field "backendId"'],
    [{ ...GOOD, kernel: { ...FILE, name: "../../etc/shadow" } }, 'field "kernel.name"'],
    [{ ...GOOD, kernel: { ...FILE, sha256: "not-a-hash" } }, 'field "kernel.sha256"'],
    [{ ...GOOD, kernelArgs: ["console=ttyS0 -chardev"] }, 'field "kernelArgs"'],
    [{ ...GOOD, kernelArgs: "console=ttyS0" }, 'field "kernelArgs"'],
    [{ ...GOOD, accelerator: "xen" }, 'field "accelerator"'],
    [
      { ...GOOD, memoryMiB: 8192 },
      "8192 MiB of RAM are over this agent's limit of 4096 MiB (its --max-memory)",
    ],
    [{ ...GOOD, memoryMiB: 1.5 }, 'field "memoryMiB"'],
    [{ ...GOOD, cpus: 0 }, 'field "cpus"'],
    [{ ...GOOD, initrd: undefined }, 'field "initrd" is missing'],
    [{ ...GOOD, kernelArgs: undefined }, 'field "kernelArgs" is missing (a list of strings'],
  ];
  for (const [description, message] of cases) {
    const error = assertThrows(() => checkDescription(description, LIMITS), DescriptionError);
    assertEquals(error.message.includes(message), true, `${message}: ${error.message}`);
  }
  assertThrows(() => checkDescription(["vm1"], LIMITS), DescriptionError, "is not an object");
});

/** A source's machine without kernel or disks. */
const PLAIN_MACHINE: QemuMachine = {
  memoryMiB: 128,
  backendId: "gangway-ram",
  cpus: 1,
  accelerator: "tcg",
  kernelArgs: [],
  extraArgs: [],
  qemuBinary: "qemu-system-x86_64",
};

Deno.test("describeMachine() refuses a machine with QEMU arguments an agent does not start", async () => {
  const machine: QemuMachine = { ...PLAIN_MACHINE, extraArgs: ["-device", "virtio-net"] };
  await assertRejects(
    () => describeMachine("vm1", machine),
    DescriptionError,
    "its QEMU has arguments a target agent does not start (-device virtio-net)",
  );
  const plain = await describeMachine("vm1", { ...machine, extraArgs: [] });
  assertEquals(checkDescription(plain, LIMITS), { ...plain });
});

Deno.test("checkDescription() takes a copied disk by its base's hash, and never a path", () => {
  const copied = { copy: true as const, base: { ...FILE, name: "disk.raw" } };
  const good = { ...GOOD, disks: [copied] };
  // No shared storage at all: a copied disk needs none.
  assertEquals(checkDescription(structuredClone(good), LIMITS), good);
  const cases: [unknown, string][] = [
    [
      { ...GOOD, disks: [{ ...copied, path: "/run/x.qcow2" }] },
      'field "disks[0].path" is not allowed',
    ],
    [{ ...GOOD, disks: [{ ...copied, format: "raw" }] }, 'field "disks[0].format" is not allowed'],
    [{ ...GOOD, disks: [{ ...copied, copy: "yes" }] }, 'field "disks[0].copy" must be true'],
    [{ ...GOOD, disks: [{ copy: true }] }, 'field "disks[0].base" must be an object'],
    [
      { ...GOOD, disks: [{ copy: true, base: "/root/.cache/disk.raw" }] },
      'field "disks[0].base" must be an object',
    ],
    [
      { ...GOOD, disks: [{ copy: true, base: { ...FILE, name: "../disk.raw" } }] },
      'field "disks[0].base.name"',
    ],
    [
      { ...GOOD, disks: [{ copy: true, base: { ...FILE, size: MAX_BASE_BYTES + 1 } }] },
      'field "disks[0].base.size"',
    ],
  ];
  for (const [description, message] of cases) {
    const error = assertThrows(() => checkDescription(description, LIMITS), DescriptionError);
    assertEquals(error.message.includes(message), true, `${message}: ${error.message}`);
  }
});

Deno.test("machineOf() refuses a copied disk whose base is not found by its hash", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const base = new TextEncoder().encode("the base image");
    const ref = { name: "disk.raw", sha256: sha256Hex(base), size: base.length };
    // An image cache keeps each image in its own directory: a file of that name, other bytes.
    await Deno.mkdir(join(dir, "images", "debian-1"), { recursive: true });
    await Deno.writeTextFile(join(dir, "images", "debian-1", "disk.raw"), "the base imagE");
    const store = new FileStore({ imagesDir: join(dir, "images"), cacheDir: join(dir, "cache") });
    const description = checkDescription({ ...GOOD, disks: [{ copy: true, base: ref }] }, LIMITS);
    const overlay = join(dir, "disks", "vm1", "disk0.qcow2");
    const notFound = await store.find(ref);
    assertEquals(notFound, undefined);
    const error = assertThrows(
      () => machineOf(description, { copiedDisks: { 0: { base: notFound, overlay } } }, "qemu"),
      DescriptionError,
    );
    assertEquals(error.message.includes('field "disks[0].base"'), true, error.message);
    // The same name with the right bytes, in another image's directory: found by its hash.
    await Deno.mkdir(join(dir, "images", "debian-2"));
    await Deno.writeFile(join(dir, "images", "debian-2", "disk.raw"), base);
    const found = await store.find(ref);
    assertEquals(found, join(dir, "images", "debian-2", "disk.raw"));
    const machine = machineOf(
      description,
      { copiedDisks: { 0: { base: found, overlay } } },
      "qemu",
    );
    assertEquals(machine.disks, [{ path: overlay, format: "qcow2", base: found }]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("describeMachine() describes a copied disk by its base's content, and only an overlay", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const base = join(dir, "disk.raw");
    await Deno.writeTextFile(base, "the base image");
    const machine: QemuMachine = {
      ...PLAIN_MACHINE,
      disks: [{ path: join(dir, "vm1.qcow2"), format: "qcow2", base }],
    };
    const described = await describeMachine("vm1", machine, { copyDisks: true });
    assertEquals(described.disks, [{
      copy: true,
      base: { name: "disk.raw", sha256: sha256Hex(await Deno.readFile(base)), size: 14 },
    }]);
    await assertRejects(
      () =>
        describeMachine("vm1", { ...machine, disks: [{ path: base, format: "raw" }] }, {
          copyDisks: true,
        }),
      DescriptionError,
      "only a writable qcow2 overlay over a base image can",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
