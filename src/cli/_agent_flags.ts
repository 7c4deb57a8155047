/**
 * The `agent` command's flags about what it starts, checked before it
 * listens: a QEMU that is not there, or an accelerator no description can
 * name, would otherwise only show when a source's gang is refused.
 *
 * @module
 */
import { join } from "node:path";
import { ACCELERATORS } from "../target/machine_description.ts";
import { UsageError } from "./_cli.ts";

/**
 * `--accelerators tcg,kvm`: a list of accelerators a destination may use.
 *
 * @throws UsageError for an empty entry or one that is not an accelerator gangway starts
 */
export function parseAccelerators(text: string): string[] {
  const list = text.split(",");
  for (const entry of list) {
    if (!(ACCELERATORS as readonly string[]).includes(entry)) {
      throw new UsageError(
        `--accelerators takes ${ACCELERATORS.join(", ")} (comma-separated), not ${
          JSON.stringify(entry)
        }`,
      );
    }
  }
  return list;
}

/**
 * Checks that `--qemu-binary` names an executable file: a path, or a
 * program name found in PATH (as QEMU is started).
 *
 * Requires `--allow-read` and `--allow-env=PATH`.
 *
 * @throws UsageError saying what is wrong with it
 */
export function checkQemuBinary(program: string): void {
  const refuse = (why: string) =>
    new UsageError(`--qemu-binary ${JSON.stringify(program)}: ${why}`);
  if (program === "") throw refuse("give the path or name of a QEMU program");
  if (program.includes("/")) {
    const why = notExecutable(program);
    if (why) throw refuse(why);
    return;
  }
  const dirs = (Deno.env.get("PATH") ?? "").split(":").filter((dir) => dir !== "");
  if (dirs.some((dir) => notExecutable(join(dir, program)) === undefined)) return;
  throw refuse("no such program in PATH (install QEMU, or give its path)");
}

/** Why `path` is not an executable file, or undefined when it is one. */
function notExecutable(path: string): string | undefined {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (error) {
    return error instanceof Deno.errors.NotFound ? "no such file" : String(error);
  }
  if (!info.isFile) return "it is not a file";
  const mode = (info.mode ?? 0) & 0o777;
  if ((mode & 0o111) === 0) return `it is not executable (mode 0${mode.toString(8)})`;
  return undefined;
}
