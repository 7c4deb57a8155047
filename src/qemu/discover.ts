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

/** Every running `qemu-system-*` process with its exact arguments. */
async function qemuProcesses(): Promise<{ pid: number; argv: string[] }[]> {
  const list = new TextDecoder().decode(await output("ps", ["-eo", "pid=,comm="]));
  const found: { pid: number; argv: string[] }[] = [];
  for (const line of list.split("\n")) {
    const [pid, comm] = line.trim().split(/\s+/);
    if (!pid || !comm?.startsWith("qemu-system")) continue;
    try {
      const raw = new TextDecoder().decode(await output("cat", [`/proc/${pid}/cmdline`]));
      found.push({
        pid: Number(pid),
        argv: raw.split("\0").filter((a, i, all) => a !== "" || i < all.length - 1),
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
  const usable: FoundQemu[] = [];
  const unusable: UnusableQemu[] = [];
  for (const { pid, argv } of await qemuProcesses()) {
    try {
      usable.push({ pid, argv, commandLine: parseCommandLine(argv[0]!, argv.slice(1)) });
    } catch (error) {
      unusable.push({ pid, argv, reason: errorMessage(error) });
    }
  }
  return { usable, unusable };
}

/**
 * The QEMU that serves a QMP socket.
 *
 * @throws Error when none does, or when its command line is not one gangway can migrate
 */
export async function findQemuProcess(qmpPath: string): Promise<FoundQemu> {
  const { usable, unusable } = await findQemus();
  const found = usable.find((q) => q.commandLine.instance.qmpPath === qmpPath);
  if (found) return found;
  const refused = unusable.find((q) => q.argv.some((a) => a.includes(`unix:${qmpPath}`)));
  if (refused) throw new Error(`Cannot migrate the guest of "${qmpPath}": ${refused.reason}`);
  throw new Error(`Cannot find a QEMU serving the QMP socket "${qmpPath}"`);
}
