/**
 * Reads a running QEMU's command line back into what gangway needs to
 * migrate it: its machine (what a destination must match) and its
 * instance (name, RAM file, QMP socket, serial log). The inverse of
 * {@linkcode qemuArgs}; guests started by hand must follow the same recipe
 * (docs/qemu.md): RAM in a shared file, a QMP unix socket, no default
 * devices, no display, no network, no reboot.
 *
 * @module
 */
import type { QemuDisk, QemuInstance, QemuMachine } from "./qemu_args.ts";

/** A QEMU command line, understood. */
export interface ParsedCommandLine {
  /** What a destination must match. */
  machine: QemuMachine;
  /** What belongs to this one QEMU (its name, RAM file, sockets). */
  instance: QemuInstance;
}

/** Options that take no value (everything else takes exactly one). */
const FLAGS = new Set([
  "-nodefaults",
  "-no-reboot",
  "-S",
  "-daemonize",
  "-enable-kvm",
  "-nographic",
  "-no-shutdown",
  "-snapshot",
]);
/** Options that only concern the process that runs, never a destination. */
const PROCESS_ONLY = new Set(["-daemonize", "-pidfile", "-D", "-d", "-trace"]);
/** Options gangway always gives its guests (and so its destinations). */
const REQUIRED = ["-nodefaults", "-display none", "-net none", "-no-reboot"];

/** Splits "a,b=c,d=e" into the leading value and its properties. */
function properties(value: string): { head: string; props: Map<string, string> } {
  const [head = "", ...rest] = value.split(",");
  const props = new Map<string, string>();
  for (const part of rest) {
    const eq = part.indexOf("=");
    props.set(eq < 0 ? part : part.slice(0, eq), eq < 0 ? "on" : part.slice(eq + 1));
  }
  return { head, props };
}

/** Properties of `-drive` gangway understands (everything else is refused). */
const DRIVE_PROPERTIES = new Set([
  "id",
  "if",
  "file",
  "format",
  "readonly",
  "backing.driver",
  "backing.file.filename",
  // What gangway's own drives say of a base (qemu_args.ts): its destinations say it again.
  "backing.file.drop-cache",
]);

/**
 * A `-drive` value as {@linkcode QemuDisk}: a virtio disk, raw or qcow2
 * (whose raw base may be named), and nothing else that a destination would
 * have to copy blindly.
 */
function parseDrive(value: string): QemuDisk {
  const props = new Map<string, string>();
  for (const part of value.split(",")) {
    const eq = part.indexOf("=");
    if (eq < 0) throw new Error(`-drive ${value}: "${part}" has no value`);
    props.set(part.slice(0, eq), part.slice(eq + 1));
  }
  const unknown = [...props.keys()].filter((key) => !DRIVE_PROPERTIES.has(key));
  if (unknown.length > 0) {
    throw new Error(`-drive ${value}: ${unknown.join(", ")} not supported`);
  }
  const path = props.get("file");
  const format = props.get("format");
  if (!path) throw new Error(`-drive ${value}: no file=`);
  if (props.get("if") !== "virtio") throw new Error(`-drive ${value}: only if=virtio is supported`);
  if (format !== "raw" && format !== "qcow2") {
    throw new Error(`-drive ${value}: format= must be raw or qcow2`);
  }
  const base = props.get("backing.file.filename");
  if ((base === undefined) !== (props.get("backing.driver") === undefined)) {
    throw new Error(`-drive ${value}: backing.driver=raw and backing.file.filename= go together`);
  }
  if (base !== undefined && (format !== "qcow2" || props.get("backing.driver") !== "raw")) {
    throw new Error(`-drive ${value}: only a qcow2 overlay over a raw base is supported`);
  }
  const readOnly = props.get("readonly") ?? "off";
  if (readOnly !== "on" && readOnly !== "off") {
    throw new Error(`-drive ${value}: readonly= must be on or off`);
  }
  return {
    path,
    format,
    ...base === undefined ? {} : { base },
    ...readOnly === "on" ? { readOnly: true } : {},
  };
}

/** A size as QEMU writes it ("128M", "1G", "134217728") in MiB. */
function mebibytes(text: string): number {
  const match = /^(\d+)([KMGT]?)$/i.exec(text);
  if (!match) return NaN;
  const scale: Record<string, number> = { "": 1 / 2 ** 20, K: 1 / 1024, M: 1, G: 1024, T: 2 ** 20 };
  return Number(match[1]) * scale[match[2]!.toUpperCase()]!;
}

/**
 * Parses QEMU's arguments (without the program).
 *
 * @throws Error saying what is missing or unsupported for a gang migration
 */
export function parseCommandLine(program: string, args: readonly string[]): ParsedCommandLine {
  let name: string | undefined;
  let backendId: string | undefined;
  let machineType = "pc";
  let memoryMiB: number | undefined;
  let ram: { id: string; size: string; path: string; shared: boolean } | undefined;
  let cpus = 1;
  let accelerator = "tcg";
  let kernel: string | undefined;
  let initrd: string | undefined;
  let append = "";
  let qmpPath: string | undefined;
  let serialLog = "";
  let incoming = false;
  const seen = new Set<string>();
  const extraArgs: string[] = [];
  const disks: QemuDisk[] = [];

  for (let i = 0; i < args.length; i++) {
    const option = args[i]!;
    if (FLAGS.has(option)) {
      seen.add(option);
      if (option === "-enable-kvm") accelerator = "kvm";
      else if (!["-nodefaults", "-no-reboot", "-S", "-daemonize"].includes(option)) {
        extraArgs.push(option);
      }
      continue;
    }
    const value = args[++i];
    if (value === undefined) throw new Error(`option ${option} has no value`);
    const { head, props } = properties(value);
    switch (option) {
      case "-name":
        name = head.startsWith("guest=") ? head.slice(6) : props.get("guest") ?? head;
        break;
      case "-accel":
        accelerator = head;
        break;
      case "-machine":
        machineType = head;
        backendId = props.get("memory-backend");
        if ([...props.keys()].some((k) => k !== "memory-backend")) {
          throw new Error(`-machine ${value}: only memory-backend= is supported`);
        }
        break;
      case "-m":
        memoryMiB = mebibytes(head);
        break;
      case "-smp":
        cpus = Number(head);
        break;
      case "-object":
        if (head === "memory-backend-file") {
          ram = {
            id: props.get("id") ?? "",
            size: props.get("size") ?? "",
            path: props.get("mem-path") ?? "",
            shared: props.get("share") === "on",
          };
        } else extraArgs.push(option, value);
        break;
      case "-kernel":
        kernel = value;
        break;
      case "-initrd":
        initrd = value;
        break;
      case "-append":
        append = value;
        break;
      case "-display":
      case "-net":
        seen.add(`${option} ${value}`);
        if (value !== "none") extraArgs.push(option, value);
        break;
      case "-serial":
        if (!head.startsWith("file:")) {
          throw new Error(`-serial ${value}: only file:PATH is supported`);
        }
        serialLog = head.slice(5);
        break;
      case "-qmp":
        if (!head.startsWith("unix:")) {
          throw new Error(`-qmp ${value}: only unix:PATH is supported`);
        }
        qmpPath = head.slice(5);
        break;
      case "-incoming":
        incoming = true;
        break;
      case "-drive":
        disks.push(parseDrive(value));
        break;
      default:
        if (!PROCESS_ONLY.has(option)) extraArgs.push(option, value);
    }
  }

  const missing = REQUIRED.filter((r) => !seen.has(r));
  if (missing.length > 0) {
    throw new Error(`started without ${missing.join(", ")} (gangway's destinations have them)`);
  }
  if (!name) throw new Error("no -name");
  if (!qmpPath) throw new Error("no -qmp unix:PATH");
  if (!ram) throw new Error("no memory-backend-file: its RAM is not in a file");
  if (!ram.shared) {
    throw new Error(`memory backend "${ram.id}" is not share=on: its file is not its RAM`);
  }
  if (ram.id !== backendId) throw new Error(`-machine does not use memory backend "${ram.id}"`);
  if (memoryMiB === undefined || memoryMiB !== mebibytes(ram.size)) {
    throw new Error(`-m and the memory backend's size=${ram.size} differ`);
  }
  if (machineType !== "pc") throw new Error(`machine type "${machineType}": only pc is supported`);
  if ((kernel === undefined) !== (initrd === undefined)) {
    throw new Error("-kernel and -initrd go together");
  }
  return {
    machine: {
      memoryMiB,
      backendId,
      cpus,
      accelerator,
      image: kernel && initrd ? { kernel, initrd, kernelVersion: "" } : undefined,
      kernelArgs: append ? append.split(" ") : [],
      ...disks.length > 0 ? { disks } : {},
      extraArgs,
      qemuBinary: program,
    },
    instance: { name, ramPath: ram.path, qmpPath, serialLog, incoming },
  };
}
