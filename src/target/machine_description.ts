/**
 * What a source asks a target agent to start: a machine description, the
 * allow-list of what may vary between guests, as the agent checks it. The
 * agent builds the destination's QEMU command line from it itself
 * (agent_machine.ts); nothing received over the network is ever an
 * argument, a path or a device of QEMU's.
 *
 * What may vary: memory size, vCPUs, accelerator, the memory backend's
 * id, the kernel and initrd (named by their content's SHA-256: the agent
 * finds them under its images directory or has them sent once), and the
 * kernel command line, disks on shared storage (in a directory the agent
 * was told is shared: the destination opens the same files), and copied
 * disks (no shared storage: the agent makes a fresh overlay of its own over
 * a base image named by its SHA-256, and the source mirrors the guest's
 * overlay into it; a copied disk never names a path). The
 * machine type is `pc` and the devices are gangway's fixed set (serial
 * console to a file, QMP, no network, no display, virtio disks); a guest
 * whose QEMU has other arguments cannot be described.
 *
 * @module
 */
import type { QemuDisk } from "../qemu/qemu_args.ts";
import { badGuestName } from "../transfer/hello_frame.ts";
import { printable } from "../_printable.ts";

/** A file a destination needs (a kernel, an initrd), named by its content. */
export interface FileRef {
  /** Its file name at the source (no directory): where the agent looks first under `--images`. */
  name: string;
  /** SHA-256 of its content, 64 lowercase hex digits. */
  sha256: string;
  /** Bytes. */
  size: number;
}

/**
 * A disk copied to the target (no shared storage): the agent makes a
 * qcow2 overlay of its own over this base image, and the source mirrors
 * the guest's overlay into it. The base is the same bytes at both ends.
 */
export interface CopiedDisk {
  /** Always true: what tells a copied disk from a shared one. */
  copy: true;
  /** The raw base image under the guest's overlay, named by its content. */
  base: FileRef;
}

/** One guest as a target agent may start it. Every field is checked; no other field is accepted. */
export interface MachineDescription {
  /** The guest's name: its RAM file's name at the target. */
  name: string;
  /** Guest RAM in MiB. */
  memoryMiB: number;
  /** Virtual CPUs. */
  cpus: number;
  /** QEMU's `-accel`. */
  accelerator: "tcg" | "kvm";
  /** Id of the memory backend (must match the source's). */
  backendId: string;
  /** Kernel, given with the initrd or not at all. */
  kernel?: FileRef;
  /** Initrd, given with the kernel or not at all. */
  initrd?: FileRef;
  /** The kernel command line, one argument per entry. */
  kernelArgs: string[];
  /**
   * Disks, in order: on shared storage (the destination opens the same
   * files at the same paths, which must lie in one of the agent's
   * shared-disk directories), or copied.
   */
  disks?: (QemuDisk | CopiedDisk)[];
}

/** Limits a target agent applies to descriptions. */
export interface DescriptionLimits {
  /** Largest guest, in MiB. */
  maxMemoryMiB: number;
  /** Most vCPUs of one guest. Default 64. */
  maxCpus?: number;
  /** Accelerators the agent starts. Default tcg and kvm. */
  accelerators?: readonly string[];
  /**
   * Directories of shared storage a disk may be in (real paths). Default none: no disks. Only
   * the form of a disk's path is checked here; where its file is, by `resolveSharedDisks`.
   */
  sharedDisks?: readonly string[];
}

/** A description that is not on the allow-list; the message names the field. */
export class DescriptionError extends Error {
  /** An error naming the guest and field. */
  constructor(message: string) {
    super(message);
    this.name = "DescriptionError";
  }
}

/** The accelerators a destination may use (QEMU's `-accel`): what an agent may be told to start. */
export const ACCELERATORS: readonly MachineDescription["accelerator"][] = ["tcg", "kvm"];

/** Largest kernel or initrd a description may name. */
export const MAX_FILE_BYTES = 2 ** 30;
/**
 * Largest base image of a copied disk. A base the agent lacks crosses the
 * link once, whole (holes included), and is kept in its files directory.
 */
export const MAX_BASE_BYTES = 2 ** 36;
const FIELDS = new Set([
  "name",
  "memoryMiB",
  "cpus",
  "accelerator",
  "backendId",
  "kernel",
  "initrd",
  "kernelArgs",
  "disks",
]);
const DISK_FIELDS = new Set(["path", "format", "base", "readOnly"]);
const COPIED_DISK_FIELDS = new Set(["copy", "base"]);
/** An absolute path of plain names: nothing a QEMU option could be smuggled in with (no comma). */
const SAFE_PATH = /^(\/[A-Za-z0-9_.+-]+)+$/;
const MAX_DISKS = 16;
const FILE_FIELDS = new Set(["name", "sha256", "size"]);
const SAFE_ID = /^[A-Za-z0-9_-]{1,64}$/;
/** Names safe as QEMU option values and as file names: what `qemuArgs()` accepts, no dot first. */
const SAFE_NAME = /^[A-Za-z0-9_+-][A-Za-z0-9_.+-]{0,127}$/;
const SHA256 = /^[0-9a-f]{64}$/;
/** One kernel argument: printable ASCII without spaces (the line is joined with spaces). */
const KERNEL_ARG = /^[\x21-\x7e]{1,1024}$/;
const MAX_KERNEL_ARGS = 256;
const MAX_KERNEL_LINE = 4096;

/**
 * Checks a description received from a source against the allow-list.
 *
 * @param value Parsed JSON, untrusted
 * @param limits The agent's limits
 * @returns The description, typed
 * @throws DescriptionError naming the guest and the first field refused
 */
export function checkDescription(value: unknown, limits: DescriptionLimits): MachineDescription {
  const object = record(value, "the machine description");
  const name = object.name;
  if (typeof name !== "string" || badGuestName(name) || !SAFE_NAME.test(name)) {
    throw new DescriptionError(
      `Cannot start a guest: field "name" must be 1-128 letters, digits or "_.+-", not ${
        printable(JSON.stringify(name)?.slice(0, 80) ?? "undefined")
      }`,
    );
  }
  const refuse = (field: string, why: string) =>
    new DescriptionError(`Cannot start guest "${name}": field "${field}" ${why}`);
  for (const key of Object.keys(object)) {
    if (!FIELDS.has(key)) throw refuse(key, "is not allowed (see docs/agent.md for what is)");
  }
  if (Number.isInteger(object.memoryMiB) && Number(object.memoryMiB) > limits.maxMemoryMiB) {
    // The usual refusal, in the operator's words: the agent's --max-memory.
    throw new DescriptionError(
      `Cannot start guest "${name}": its ${object.memoryMiB} MiB of RAM are over this agent's ` +
        `limit of ${limits.maxMemoryMiB} MiB (its --max-memory)`,
    );
  }
  const memoryMiB = wholeNumber(object.memoryMiB, 1, limits.maxMemoryMiB, "memoryMiB", refuse);
  const cpus = wholeNumber(object.cpus, 1, limits.maxCpus ?? 64, "cpus", refuse);
  const accelerators = limits.accelerators ?? ACCELERATORS;
  if (typeof object.accelerator !== "string" || !accelerators.includes(object.accelerator)) {
    throw refuse("accelerator", `must be one of ${accelerators.join(", ")}`);
  }
  if (typeof object.backendId !== "string" || !SAFE_ID.test(object.backendId)) {
    throw refuse("backendId", "must be 1-64 letters, digits, _ or -");
  }
  const kernel = object.kernel === undefined ? undefined : fileRef(object.kernel, "kernel", refuse);
  const initrd = object.initrd === undefined ? undefined : fileRef(object.initrd, "initrd", refuse);
  if ((kernel === undefined) !== (initrd === undefined)) {
    throw refuse(kernel ? "initrd" : "kernel", "is missing: a kernel and an initrd go together");
  }
  const kernelArgs = object.kernelArgs;
  if (kernelArgs === undefined) {
    throw refuse("kernelArgs", "is missing (a list of strings, which may be empty)");
  }
  if (
    !Array.isArray(kernelArgs) || kernelArgs.length > MAX_KERNEL_ARGS ||
    !kernelArgs.every((arg) => typeof arg === "string" && KERNEL_ARG.test(arg)) ||
    kernelArgs.join(" ").length > MAX_KERNEL_LINE
  ) {
    throw refuse(
      "kernelArgs",
      `must be at most ${MAX_KERNEL_ARGS} strings of printable ASCII without spaces, ` +
        `${MAX_KERNEL_LINE} characters in all`,
    );
  }
  const disks = object.disks === undefined
    ? undefined
    : diskList(object.disks, limits.sharedDisks ?? [], refuse);
  return {
    name,
    memoryMiB,
    cpus,
    accelerator: object.accelerator as "tcg" | "kvm",
    backendId: object.backendId,
    kernel,
    initrd,
    kernelArgs: kernelArgs as string[],
    ...disks ? { disks } : {},
  };
}

function diskList(
  value: unknown,
  sharedDirs: readonly string[],
  refuse: (field: string, why: string) => Error,
): (QemuDisk | CopiedDisk)[] {
  if (!Array.isArray(value) || value.length > MAX_DISKS) {
    throw refuse("disks", `must be a list of at most ${MAX_DISKS} disks`);
  }
  // Only the form here: where the file really is, the agent checks on its real path when it
  // prepares the gang (shared_disks.ts), and the destination gets that real path (agent_machine.ts).
  const inShared = (path: unknown) =>
    typeof path === "string" && SAFE_PATH.test(path) &&
    !path.split("/").some((part) => part === "." || part === "..") && sharedDirs.length > 0;
  return value.map((disk, i): QemuDisk | CopiedDisk => {
    const field = `disks[${i}]`;
    if (typeof disk !== "object" || disk === null || Array.isArray(disk)) {
      throw refuse(
        field,
        "must be an object { path, format, base?, readOnly? } or { copy: true, base }",
      );
    }
    const entry = disk as Record<string, unknown>;
    if (entry.copy !== undefined) return copiedDisk(entry, field, refuse);
    for (const key of Object.keys(entry)) {
      if (!DISK_FIELDS.has(key)) throw refuse(`${field}.${key}`, "is not allowed");
    }
    const where = sharedDiskWhere(sharedDirs);
    if (!inShared(entry.path)) throw refuse(`${field}.path`, `must be ${where}`);
    if (entry.format !== "qcow2" && entry.format !== "raw") {
      throw refuse(`${field}.format`, "must be qcow2 or raw");
    }
    if (entry.base !== undefined && (entry.format !== "qcow2" || !inShared(entry.base))) {
      throw refuse(`${field}.base`, `must be, under a qcow2 overlay, ${where}`);
    }
    if (entry.readOnly !== undefined && typeof entry.readOnly !== "boolean") {
      throw refuse(`${field}.readOnly`, "must be true or false");
    }
    return {
      path: entry.path as string,
      format: entry.format,
      ...entry.base !== undefined ? { base: entry.base as string } : {},
      ...entry.readOnly !== undefined ? { readOnly: entry.readOnly } : {},
    };
  });
}

/** Where a shared disk must be, for a refusal: "must be ..." */
export function sharedDiskWhere(sharedDirs: readonly string[]): string {
  return sharedDirs.length > 0
    ? `a file in a shared-disk directory of this agent (${sharedDirs.join(", ")})`
    : "on shared storage, and this agent has none (--shared-disks)";
}

/**
 * A copied disk: only its base, by content. A path is never taken (the
 * agent names the overlay itself); `copy` must be exactly true.
 */
function copiedDisk(
  entry: Record<string, unknown>,
  field: string,
  refuse: (field: string, why: string) => Error,
): CopiedDisk {
  for (const key of Object.keys(entry)) {
    if (!COPIED_DISK_FIELDS.has(key)) {
      throw refuse(
        `${field}.${key}`,
        "is not allowed on a copied disk (the agent makes its overlay itself)",
      );
    }
  }
  if (entry.copy !== true) throw refuse(`${field}.copy`, "must be true");
  return { copy: true, base: fileRef(entry.base, `${field}.base`, refuse, MAX_BASE_BYTES) };
}

/** True for a copied disk of a description. */
export function isCopied(disk: QemuDisk | CopiedDisk): disk is CopiedDisk {
  return "copy" in disk && disk.copy === true;
}

function record(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new DescriptionError(`Cannot start a guest: ${what} is not an object`);
  }
  return value as Record<string, unknown>;
}

function wholeNumber(
  value: unknown,
  min: number,
  max: number,
  field: string,
  refuse: (field: string, why: string) => Error,
): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw refuse(field, `must be a whole number from ${min} to ${max}`);
  }
  return value;
}

/**
 * Checks a file reference received from a source (at most a base image's
 * size: the agent takes only files its last `prepare` asked for, at the
 * size asked).
 *
 * @throws DescriptionError naming the field refused
 */
export function checkFileRef(value: unknown): FileRef {
  return fileRef(
    value,
    "file",
    (field, why) => new DescriptionError(`Cannot take a file: field "${field}" ${why}`),
    MAX_BASE_BYTES,
  );
}

function fileRef(
  value: unknown,
  field: string,
  refuse: (field: string, why: string) => Error,
  maxBytes = MAX_FILE_BYTES,
): FileRef {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw refuse(field, "must be an object { name, sha256, size }");
  }
  const ref = value as Record<string, unknown>;
  for (const key of Object.keys(ref)) {
    if (!FILE_FIELDS.has(key)) throw refuse(`${field}.${key}`, "is not allowed");
  }
  if (typeof ref.name !== "string" || !SAFE_NAME.test(ref.name)) {
    throw refuse(`${field}.name`, `must be a plain file name of letters, digits or "_.+-"`);
  }
  if (typeof ref.sha256 !== "string" || !SHA256.test(ref.sha256)) {
    throw refuse(`${field}.sha256`, "must be 64 lowercase hex digits");
  }
  const size = wholeNumber(ref.size, 1, maxBytes, `${field}.size`, refuse);
  return { name: ref.name, sha256: ref.sha256, size };
}
