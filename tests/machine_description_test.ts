import { assertEquals, assertRejects, assertThrows } from "./_assert.ts";
import {
  checkDescription,
  describeMachine,
  DescriptionError,
  type MachineDescription,
} from "../src/target/machine_description.ts";
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
    [{ ...GOOD, memoryMiB: 8192 }, 'field "memoryMiB" must be a whole number from 1 to 4096'],
    [{ ...GOOD, memoryMiB: 1.5 }, 'field "memoryMiB"'],
    [{ ...GOOD, cpus: 0 }, 'field "cpus"'],
    [{ ...GOOD, initrd: undefined }, 'field "initrd" is missing'],
  ];
  for (const [description, message] of cases) {
    const error = assertThrows(() => checkDescription(description, LIMITS), DescriptionError);
    assertEquals(error.message.includes(message), true, `${message}: ${error.message}`);
  }
  assertThrows(() => checkDescription(["vm1"], LIMITS), DescriptionError, "is not an object");
});

Deno.test("describeMachine() refuses a machine with QEMU arguments an agent does not start", async () => {
  const machine: QemuMachine = {
    memoryMiB: 128,
    backendId: "gangway-ram",
    cpus: 1,
    accelerator: "tcg",
    kernelArgs: [],
    extraArgs: ["-device", "virtio-net"],
    qemuBinary: "qemu-system-x86_64",
  };
  await assertRejects(
    () => describeMachine("vm1", machine),
    DescriptionError,
    "its QEMU has arguments a target agent does not start (-device virtio-net)",
  );
  const plain = await describeMachine("vm1", { ...machine, extraArgs: [] });
  assertEquals(checkDescription(plain, LIMITS), { ...plain });
});
