/**
 * The source's side of a machine description: what it tells a target agent
 * about a running guest, its kernel, initrd and disk bases named by their
 * content (see machine_description.ts for what an agent accepts).
 *
 * @module
 */
import { basename } from "node:path";
import type { QemuDisk, QemuMachine } from "../qemu/qemu_args.ts";
import { errorMessage } from "../_errors.ts";
import { sha256OfFile } from "./_file_hash.ts";
import {
  type CopiedDisk,
  DescriptionError,
  type FileRef,
  type MachineDescription,
} from "./machine_description.ts";

/** Options of {@linkcode describeMachine}. */
export interface DescribeOptions {
  /**
   * Describe the disks as copied (no shared storage): each must be a qcow2
   * overlay over a base image, which is named by its content. Default
   * false: the disks are on shared storage.
   */
  copyDisks?: boolean;
}

/**
 * Describes a source guest's machine for a target agent, hashing its
 * kernel and initrd.
 *
 * Requires `--allow-read` (the kernel and initrd).
 *
 * @throws DescriptionError when the machine has QEMU arguments outside the
 * allow-list, or its files cannot be read
 */
export async function describeMachine(
  name: string,
  machine: QemuMachine,
  options: DescribeOptions = {},
): Promise<MachineDescription> {
  const refuse = (why: string) =>
    new DescriptionError(`Cannot describe guest "${name}" for a target agent: ${why}`);
  if (machine.extraArgs.length > 0) {
    throw refuse(
      `its QEMU has arguments a target agent does not start (${machine.extraArgs.join(" ")})`,
    );
  }
  if (machine.anonymousRam) throw refuse("its RAM is not in a shared file (docs/qemu.md)");
  if (machine.accelerator !== "tcg" && machine.accelerator !== "kvm") {
    throw refuse(`accelerator "${machine.accelerator}" is not tcg or kvm`);
  }
  const image = machine.image;
  const disks = options.copyDisks
    ? await Promise.all((machine.disks ?? []).map((disk) => copiedDiskOf(disk, refuse)))
    : machine.disks?.map((disk) => ({ ...disk }));
  return {
    name,
    memoryMiB: machine.memoryMiB,
    cpus: machine.cpus,
    accelerator: machine.accelerator,
    backendId: machine.backendId,
    kernel: image ? await fileRefOf(image.kernel, refuse) : undefined,
    initrd: image ? await fileRefOf(image.initrd, refuse) : undefined,
    kernelArgs: machine.kernelArgs,
    ...disks?.length ? { disks } : {},
  };
}

/** A source's disk as a copied one: its base by content (a qcow2 overlay over a base, writable). */
async function copiedDiskOf(
  disk: QemuDisk,
  refuse: (why: string) => Error,
): Promise<CopiedDisk> {
  if (disk.format !== "qcow2" || disk.base === undefined || disk.readOnly) {
    throw refuse(
      `disk "${disk.path}" cannot be copied: only a writable qcow2 overlay over a base image can`,
    );
  }
  return { copy: true, base: await fileRefOf(disk.base, refuse) };
}

/** A file's name, size and SHA-256 (read a piece at a time, remembered while it is unchanged). */
export async function fileRefOf(
  path: string,
  refuse: (why: string) => Error = (why) => new Error(why),
): Promise<FileRef> {
  try {
    const { sha256, size } = await sha256OfFile(path);
    return { name: basename(path), sha256, size };
  } catch (error) {
    throw refuse(`cannot read "${path}": ${errorMessage(error)}`);
  }
}
