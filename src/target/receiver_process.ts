/**
 * The `receive` command as a child process, possibly inside another
 * network namespace (a command prefix such as `ip netns exec NS`). Its
 * JSON events are collected from stdout.
 *
 * @module
 */
import { type ServerEvent, ServerProcess } from "./server_process.ts";

/** Options of {@linkcode ReceiverProcess.start}. */
export interface ReceiverProcessOptions {
  /** Directory the guests' RAM files are written to. */
  dir: string;
  /** Address to listen on. Default 127.0.0.1 and any free port. */
  listen?: { hostname: string; port?: number };
  /** Runs the receiver, e.g. `["ip", "netns", "exec", "NS"]`. */
  commandPrefix?: string[];
  /** More arguments for `receive` (transport, limits). */
  args?: string[];
  /** Where the receiver's own log lines go. Default: discarded. */
  stderr?: "inherit" | "null";
}

/** An event the receiver printed (see `ReceiverEvent` in src/transfer/receiver.ts). */
export type ReceiverProcessEvent = ServerEvent;

/** A running `receive --json`. */
export type ReceiverProcess = ServerProcess;

/** What `receive` (src/cli/receive.ts) needs: `deno task receive`'s permissions. */
export const RECEIVE_PERMISSIONS: readonly string[] = [
  "--allow-ffi",
  "--allow-read",
  "--allow-write",
  "--allow-net",
  "--allow-env=GANGWAY_LIB",
  "--allow-sys=uid",
];

/** Starts `receive --json` as a child process. */
export const ReceiverProcess: {
  /**
   * Starts the receiver and waits until it listens.
   *
   * Requires `--allow-run` (deno, and the prefix's program).
   *
   * @throws Error when it exits first
   */
  start(options: ReceiverProcessOptions): Promise<ServerProcess>;
} = {
  start(options: ReceiverProcessOptions): Promise<ServerProcess> {
    const listen = options.listen ?? { hostname: "127.0.0.1" };
    return ServerProcess.start({
      script: new URL("../cli/receive.ts", import.meta.url),
      permissions: RECEIVE_PERMISSIONS,
      args: [
        "--listen",
        `${listen.hostname}:${listen.port ?? 0}`,
        "--dir",
        options.dir,
        ...options.args ?? [],
      ],
      commandPrefix: options.commandPrefix,
      stderr: options.stderr,
      what: "the receiver",
    });
  },
};
