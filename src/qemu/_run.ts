/**
 * Runs a helper program to completion and turns a failure into an Error
 * that quotes its stderr.
 *
 * @module
 */

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
    const reason = error instanceof Error ? error.message : String(error);
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
