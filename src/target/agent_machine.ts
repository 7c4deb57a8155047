/**
 * The agent's side of a machine description (describe_machine.ts is the
 * source's): where the agent finds the files a checked description names,
 * and the QEMU machine it starts from them. Every path in that machine is
 * the agent's own: files found by their hash, shared disks at the real
 * paths the agent resolved, copied disks' overlays named by the agent.
 *
 * @module
 */
import type { QemuDisk, QemuMachine } from "../qemu/qemu_args.ts";
import {
  checkDescription,
  type CopiedDisk,
  DescriptionError,
  type FileRef,
  isCopied,
  type MachineDescription,
} from "./machine_description.ts";
import type { AgentHost } from "./agent_host.ts";
import { copiedDiskPath } from "./agent_gang.ts";
import { resolveSharedDisks, type SharedDiskPaths } from "./shared_disks.ts";

/** Where the agent found the files a description names, and where it puts copied disks. */
export interface ResolvedFiles {
  kernel?: string;
  initrd?: string;
  /** By disk index, for each copied disk: its base found by hash, and the overlay the agent makes. */
  copiedDisks?: Record<number, { base?: string; overlay: string }>;
  /**
   * By disk index, for each shared disk: the real paths of its file and
   * base, found strictly inside a shared-disk directory (`resolveSharedDisks`).
   */
  sharedDisks?: SharedDiskPaths;
}

/**
 * Finds a description's files by hash, resolves its shared disks to real
 * paths inside the shared-disk directories, and names the overlays of its
 * copied disks (the agent's own paths, from the checked name and index).
 *
 * Requires `--allow-read`.
 *
 * @returns What was found, and the files the agent lacks (for the source to send)
 * @throws DescriptionError naming the first shared disk whose file is elsewhere or missing
 */
export async function resolveFiles(
  description: MachineDescription,
  host: AgentHost,
): Promise<ResolvedFiles & { missing: FileRef[] }> {
  const missing: FileRef[] = [];
  const find = async (ref: FileRef) => {
    const path = await host.files.find(ref);
    if (!path) missing.push(ref);
    return path;
  };
  const resolved: ResolvedFiles & { missing: FileRef[] } = { missing };
  if (description.kernel) resolved.kernel = await find(description.kernel);
  if (description.initrd) resolved.initrd = await find(description.initrd);
  const shared = await resolveSharedDisks(description, host.options.sharedDisks ?? []);
  if (Object.keys(shared).length > 0) resolved.sharedDisks = shared;
  for (const [index, disk] of (description.disks ?? []).entries()) {
    if (!isCopied(disk)) continue;
    resolved.copiedDisks ??= {};
    resolved.copiedDisks[index] = {
      base: await find(disk.base),
      overlay: copiedDiskPath(host.diskDir, description.name, index),
    };
  }
  return resolved;
}

/**
 * The destination's machine: the description, the agent's local copies of
 * its files and the agent's own QEMU program. No other argument is added.
 *
 * @throws DescriptionError when a copied disk's base was not found by its hash, or a shared
 * disk was not resolved in a shared-disk directory
 */
export function machineOf(
  description: MachineDescription,
  files: ResolvedFiles,
  qemuBinary: string,
): QemuMachine {
  return {
    memoryMiB: description.memoryMiB,
    backendId: description.backendId,
    cpus: description.cpus,
    accelerator: description.accelerator,
    image: files.kernel && files.initrd
      ? { kernel: files.kernel, initrd: files.initrd, kernelVersion: "" }
      : undefined,
    kernelArgs: description.kernelArgs,
    ...description.disks
      ? { disks: description.disks.map((disk, i) => localDisk(description.name, disk, i, files)) }
      : {},
    extraArgs: [],
    qemuBinary,
  };
}

/**
 * A disk as the destination opens it: a shared one at the real paths the
 * agent resolved (never the path as the source sent it), a copied one at
 * the agent's paths.
 */
function localDisk(
  guest: string,
  disk: QemuDisk | CopiedDisk,
  index: number,
  files: ResolvedFiles,
): QemuDisk {
  if (!isCopied(disk)) {
    const shared = files.sharedDisks?.[index];
    if (!shared || (disk.base !== undefined) !== (shared.base !== undefined)) {
      throw new DescriptionError(
        `Cannot start guest "${guest}": field "disks[${index}].path" was not found in a ` +
          "shared-disk directory of this agent",
      );
    }
    return { ...disk, ...shared };
  }
  const local = files.copiedDisks?.[index];
  if (!local?.base) {
    throw new DescriptionError(
      `Cannot start guest "${guest}": field "disks[${index}].base" names a base image ` +
        `(SHA-256 ${disk.base.sha256}) that this agent does not have`,
    );
  }
  return { path: local.overlay, format: "qcow2", base: local.base };
}

/**
 * Checks a gang's descriptions as `prepare` takes them, against the
 * agent's limits and what its host holds (names in use), and finds their
 * files. Starts nothing: a dry run asks this alone.
 *
 * Requires `--allow-read`.
 *
 * @returns The checked descriptions, the files found for each, and the files the agent lacks
 * @throws DescriptionError (or Error, for a name in use) saying why the gang cannot come
 */
export async function checkGang(guests: unknown, host: AgentHost): Promise<{
  descriptions: MachineDescription[];
  resolved: ResolvedFiles[];
  missing: FileRef[];
}> {
  if (!Array.isArray(guests) || guests.length === 0) {
    throw new DescriptionError(
      'Cannot prepare the gang: field "guests" must be a non-empty list',
    );
  }
  const { maxGuests, maxMemoryMiB } = host.options;
  if (guests.length > maxGuests) {
    throw new DescriptionError(
      `Cannot prepare the gang: ${guests.length} guests are over this agent's limit of ${maxGuests}`,
    );
  }
  const descriptions = guests.map((guest) =>
    checkDescription(guest, {
      maxMemoryMiB,
      accelerators: host.options.accelerators,
      sharedDisks: host.options.sharedDisks,
    })
  );
  const names = new Set(descriptions.map((d) => d.name));
  if (names.size !== descriptions.length) {
    throw new DescriptionError("Cannot prepare the gang: two guests have the same name");
  }
  const total = descriptions.reduce((sum, d) => sum + d.memoryMiB, 0);
  if (total > maxMemoryMiB) {
    throw new DescriptionError(
      `Cannot prepare the gang: its ${total} MiB of RAM are over this agent's limit of ${maxMemoryMiB} MiB`,
    );
  }
  await host.claimNames([...names]);
  const missing: FileRef[] = [];
  const resolved: ResolvedFiles[] = [];
  for (const description of descriptions) {
    const files = await resolveFiles(description, host);
    for (const ref of files.missing) {
      if (!missing.some((m) => m.sha256 === ref.sha256)) missing.push(ref);
    }
    resolved.push(files);
  }
  return { descriptions, resolved, missing };
}
