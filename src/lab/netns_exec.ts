/**
 * Runs the short administration commands of the lab network (`ip`, `tc`)
 * and turns their failures into readable errors. Internal to src/lab.
 *
 * @module
 */
import { errorMessage } from "../_errors.ts";

/** How long one `ip` or `tc` call may take before it is killed. */
const TOOL_TIMEOUT_MS = 10_000;

/** A command that ran and failed: its exit code and what it said. */
export class ToolError extends Error {
  /** The exit code, or null when the command could not be started. */
  readonly code: number | null;
  /** What the command wrote on stderr, trimmed. */
  readonly stderr: string;

  /**
   * Describes a failed command.
   *
   * @param command The command line
   * @param code Its exit code, or null when it could not be started
   * @param stderr What it said
   * @param where Where it ran, when not on the host: a namespace name
   */
  constructor(command: string, code: number | null, stderr: string, where?: string) {
    const place = where === undefined ? "" : ` on "${where}"`;
    super(`Cannot run "${command}"${place}: ${stderr || `exit code ${code}`}`);
    this.name = "ToolError";
    this.code = code;
    this.stderr = stderr;
  }
}

/**
 * Runs a command to completion and returns its stdout.
 *
 * Requires `--allow-run`.
 *
 * @param cmd The program, e.g. "ip"
 * @param args Its arguments
 * @returns What it wrote on stdout
 * @throws ToolError when it cannot be started, fails or times out
 */
export async function runTool(cmd: string, args: readonly string[]): Promise<string> {
  const line = [cmd, ...args].join(" ");
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command(cmd, {
      args: [...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(TOOL_TIMEOUT_MS),
    }).output();
  } catch (error) {
    throw new ToolError(line, null, startFailure(error));
  }
  return checkOutput(line, output);
}

/**
 * Runs a command to completion synchronously: for the exit handlers, where
 * nothing asynchronous runs any more.
 *
 * Requires `--allow-run`.
 *
 * @param cmd The program
 * @param args Its arguments
 * @returns What it wrote on stdout
 * @throws ToolError when it cannot be started or fails
 */
export function runToolSync(cmd: string, args: readonly string[]): string {
  const line = [cmd, ...args].join(" ");
  let output: Deno.CommandOutput;
  try {
    output = new Deno.Command(cmd, {
      args: [...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    })
      .outputSync();
  } catch (error) {
    throw new ToolError(line, null, startFailure(error));
  }
  return checkOutput(line, output);
}

function checkOutput(line: string, output: Deno.CommandOutput): string {
  const decoder = new TextDecoder();
  if (!output.success) {
    const stderr = decoder.decode(output.stderr).trim();
    throw new ToolError(line, output.code, output.signal ? `killed by ${output.signal}` : stderr);
  }
  return decoder.decode(output.stdout);
}

function startFailure(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "not found on PATH";
  return errorMessage(error);
}
