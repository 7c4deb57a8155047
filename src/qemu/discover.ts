/**
 * Finds the QEMUs running on this host and reads their command lines, so
 * that guests started by another process (or by hand) can be migrated.
 * `ps` lists them and `cat /proc/PID/cmdline` gives each exact argument
 * vector (Deno itself may not read /proc without --allow-all).
 *
 * @module
 */
import { parseCommandLine, type ParsedCommandLine } from "./qemu_command_line.ts";
import { errorMessage } from "../_errors.ts";

/** A QEMU process and what its command line says. */
export interface FoundQemu {
  /** Its process id. */
  pid: number;
  /** Its exact argument vector. */
  argv: string[];
  /** Its machine and instance, or why gangway cannot migrate it. */
  commandLine: ParsedCommandLine;
  /**
   * True when it is known to run in another mount namespace than this
   * process (a container, a service with private /tmp, or the other host of
   * a simulated pair): the paths of its command line (QMP socket, RAM file)
   * are not this process's paths, and it is reached through `/proc/PID/root`
   * if at all. False when it runs in this one, or when that cannot be read
   * (another user's process).
   */
  otherMountNamespace: boolean;
}

/** A QEMU whose command line gangway cannot use, and why. */
export interface UnusableQemu {
  /** Its process id. */
  pid: number;
  /** Its exact argument vector. */
  argv: string[];
  /** Why gangway cannot use it. */
  reason: string;
}

async function output(program: string, args: string[]): Promise<Uint8Array> {
  const { success, stdout } = await new Deno.Command(program, {
    args,
    stdout: "piped",
    stderr: "null",
  })
    .output();
  if (!success) throw new Error(`${program} ${args.join(" ")} failed`);
  return stdout;
}

/** The mount namespace of a process (`mnt:[INODE]`), or undefined when it cannot be read. */
async function mountNamespace(pid: number | "self"): Promise<string | undefined> {
  try {
    return new TextDecoder().decode(await output("readlink", [`/proc/${pid}/ns/mnt`])).trim();
  } catch {
    return undefined;
  }
}

/** A QEMU process, its exact argument vector, and whether it runs in another mount namespace. */
type QemuProcess = { pid: number; argv: string[]; otherMountNamespace: boolean };

/**
 * Every running `qemu-system-*` process with its exact arguments; with
 * `naming`, only those whose arguments, as `ps` shows them, hold that text
 * (a QMP path): a process read exactly costs two programs run, and a host
 * of 24 guests attached one by one ran some 1,200 of them.
 */
async function qemuProcesses(naming?: string): Promise<QemuProcess[]> {
  // `ww`: the arguments whole, however long (ps cuts them to the terminal's width otherwise).
  const list = new TextDecoder().decode(await output("ps", ["-ww", "-eo", "pid=,comm=,args="]));
  // readlink's own namespace is this process's: a child inherits it.
  const ours = await mountNamespace("self");
  const found: QemuProcess[] = [];
  for (const line of list.split("\n")) {
    const [pid, comm] = line.trim().split(/\s+/);
    if (!pid || !comm?.startsWith("qemu-system")) continue;
    if (naming !== undefined && !line.includes(naming)) continue;
    try {
      const raw = new TextDecoder().decode(await output("cat", [`/proc/${pid}/cmdline`]));
      const theirs = await mountNamespace(Number(pid));
      found.push({
        pid: Number(pid),
        argv: raw.split("\0").filter((a, i, all) => a !== "" || i < all.length - 1),
        otherMountNamespace: ours !== undefined && theirs !== undefined && theirs !== ours,
      });
    } catch {
      // It exited since ps listed it.
    }
  }
  return found;
}

/**
 * Lists the QEMUs of this host: those gangway can migrate (parsed) and
 * those it cannot (with the reason).
 *
 * Requires `--allow-run` (ps, cat).
 */
export async function findQemus(): Promise<{ usable: FoundQemu[]; unusable: UnusableQemu[] }> {
  return parsed(await qemuProcesses());
}

/** QEMU processes, those gangway can migrate parsed, the others with the reason. */
function parsed(processes: QemuProcess[]): { usable: FoundQemu[]; unusable: UnusableQemu[] } {
  const usable: FoundQemu[] = [];
  const unusable: UnusableQemu[] = [];
  for (const { pid, argv, otherMountNamespace } of processes) {
    try {
      usable.push({
        pid,
        argv,
        commandLine: parseCommandLine(argv[0]!, argv.slice(1)),
        otherMountNamespace,
      });
    } catch (error) {
      unusable.push({ pid, argv, reason: errorMessage(error) });
    }
  }
  return { usable, unusable };
}

/**
 * The QEMU that serves a QMP socket: of the QEMUs whose command line names
 * that path, one of this process's mount namespace first (another
 * namespace's QEMU may name the same path, its own), or with
 * `otherMountNamespace` one of another first (a path reached through
 * `/proc/PID/root`).
 *
 * @throws Error when none does, or when its command line is not one gangway can migrate
 */
export async function findQemuProcess(
  qmpPath: string,
  options: { otherMountNamespace?: boolean } = {},
): Promise<FoundQemu> {
  const servesIt = (q: FoundQemu) => q.commandLine.instance.qmpPath === qmpPath;
  let { usable, unusable } = parsed(await qemuProcesses(qmpPath));
  // ps shows a character it cannot print as "?": every QEMU read exactly, before giving up.
  if (!usable.some(servesIt)) ({ usable, unusable } = await findQemus());
  const named = usable.filter(servesIt);
  const elsewhere = options.otherMountNamespace ?? false;
  const found = named.find((q) => q.otherMountNamespace === elsewhere) ?? named[0];
  if (found) return found;
  const refused = unusable.find((q) => q.argv.some((a) => a.includes(`unix:${qmpPath}`)));
  if (refused) throw new Error(`Cannot migrate the guest of "${qmpPath}": ${refused.reason}`);
  throw new Error(`Cannot find a QEMU serving the QMP socket "${qmpPath}"`);
}
