/**
 * Runs a helper program to completion and turns a failure into an Error
 * that quotes its stderr.
 *
 * @module
 */
import { forEachLine } from "../_lines.ts";
import { errorMessage } from "../_errors.ts";

/** Options of {@linkcode run}. */
export interface RunOptions {
  /** Working directory. */
  cwd?: string;
  /** Extra environment variables. */
  env?: Record<string, string>;
}

/**
 * Runs `program args...` and returns its stdout as text.
 *
 * @throws Error naming the command, its exit code and the end of its stderr
 */
export async function run(program: string, args: string[], options: RunOptions = {}) {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command(program, {
      args,
      cwd: options.cwd,
      env: options.env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (error) {
    const reason = errorMessage(error);
    throw new Error(`Cannot run "${program}": ${reason}`);
  }
  if (!output.success) {
    const stderr = new TextDecoder().decode(output.stderr).trim().slice(-2000);
    throw new Error(
      `Cannot run "${program} ${args.join(" ")}": exit code ${output.code}` +
        (stderr ? `: ${stderr}` : ""),
    );
  }
  return new TextDecoder().decode(output.stdout);
}

/**
 * Runs `program args...`, passing each line it writes to stderr or stdout
 * to `onLine` as it comes (a long build shows its progress).
 *
 * @throws Error naming the command, its exit code and its last lines
 */
export async function runWithProgress(
  program: string,
  args: string[],
  onLine: (line: string) => void,
): Promise<void> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(program, { args, stdin: "null", stdout: "piped", stderr: "piped" })
      .spawn();
  } catch (error) {
    const reason = errorMessage(error);
    throw new Error(`Cannot run "${program}": ${reason}`);
  }
  const last: string[] = [];
  const each = (line: string) => {
    if (line.trim() === "") return;
    last.push(line);
    if (last.length > 20) last.shift();
    onLine(line);
  };
  const [status] = await Promise.all([
    child.status,
    forEachLine(child.stdout, each),
    forEachLine(child.stderr, each),
  ]);
  if (!status.success) {
    throw new Error(
      `Cannot run "${program} ${args.join(" ")}": exit code ${status.code}: ${last.join("\n")}`,
    );
  }
}
