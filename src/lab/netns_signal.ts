/**
 * Cleanup on Ctrl-C: without it a signal ends Deno at once, and the lab's
 * namespaces, guests and files stay behind.
 *
 * @module
 */
import { errorMessage } from "../_errors.ts";

/** The signals that end a lab run: Ctrl-C, `kill`, a closed terminal. */
const SIGNALS = { SIGINT: 2, SIGTERM: 15, SIGHUP: 1 } as const;
/** How long the cleanups may take before the process exits anyway. */
const CLEANUP_TIMEOUT_MS = 20_000;

/** What {@linkcode exitOnSignal} runs: may return a promise, which it awaits. */
export type SignalCleanup = () => unknown;

/** Options of {@linkcode exitOnSignal}. */
export interface ExitOnSignalOptions {
  /**
   * Say on stderr that the cleanup starts and when it is done. Default
   * true; false for a child process whose parent, signalled too, says it
   * to the user (its stderr would repeat the words).
   */
  announce?: boolean;
}

/** A registered cleanup, and whether it wants the user told. */
interface Registered {
  cleanup: SignalCleanup;
  announce: boolean;
}

/** The registered cleanups, latest last; listeners exist while it is not empty. */
const cleanups: Registered[] = [];
const listeners = new Map<Deno.Signal, () => void>();
let exiting: Deno.Signal | null = null;

/**
 * On SIGINT, SIGTERM or SIGHUP, runs the cleanup, then exits with 128 +
 * the signal's number (130 for Ctrl-C), as a shell expects of a program a
 * signal ended, and (unless `options.announce` is false) says so on stderr
 * as it starts and when it is done: a cleanup may take seconds. Cleanups
 * registered by several calls run latest first, one after another, like
 * `using` blocks unwinding. A second signal during the
 * cleanup exits at once; a cleanup that fails or takes over 20 s is
 * reported on stderr and the process exits all the same.
 *
 * Dispose the returned handle to unregister (the last one removes the
 * signal listeners, so the default Ctrl-C behaviour comes back).
 *
 * Requires no permission itself; the cleanup needs its own (for a
 * {@linkcode LabNetwork}, `--allow-run`).
 *
 * @param cleanup What to undo: stop the guests, close the network...
 * @param options Whether the user is told
 * @returns A handle that unregisters the cleanup
 *
 * @example
 * ```ts
 * import { exitOnSignal } from "./netns_signal.ts";
 * import { LabNetwork } from "./netns.ts";
 *
 * declare function stopGuests(): Promise<void>;
 * await using net = await LabNetwork.create();
 * using _signals = exitOnSignal(async () => {
 *   await stopGuests();
 *   await net.close();
 * });
 * ```
 */
export function exitOnSignal(
  cleanup: SignalCleanup,
  options: ExitOnSignalOptions = {},
): Disposable {
  const entry: Registered = { cleanup, announce: options.announce ?? true };
  cleanups.push(entry);
  if (listeners.size === 0) addListeners();
  return {
    [Symbol.dispose]() {
      const at = cleanups.indexOf(entry);
      if (at >= 0) cleanups.splice(at, 1);
      if (cleanups.length === 0 && exiting === null) removeListeners();
    },
  };
}

function addListeners(): void {
  for (const [signal, number] of Object.entries(SIGNALS) as [Deno.Signal, number][]) {
    const listener = () => void onSignal(signal, 128 + number);
    listeners.set(signal, listener);
    Deno.addSignalListener(signal, listener);
  }
}

function removeListeners(): void {
  for (const [signal, listener] of listeners) Deno.removeSignalListener(signal, listener);
  listeners.clear();
}

/**
 * The signal {@linkcode exitOnSignal} is handling, if any: work that fails
 * because the cleanup just ended its processes can tell an interruption
 * from a failure, and leave the exit (and its code) to the handler.
 *
 * @returns The signal, or null when none arrived
 */
export function pendingSignal(): Deno.Signal | null {
  return exiting;
}

async function onSignal(signal: Deno.Signal, code: number): Promise<void> {
  if (exiting !== null) Deno.exit(code); // asked twice: the user wants out now
  exiting = signal;
  const announce = cleanups.some((entry) => entry.announce);
  if (announce) {
    console.error(`Interrupted (${signal}): cleaning up first; ${signal} again exits at once`);
  }
  const timer = setTimeout(() => {
    console.error(`Cannot clean up after ${signal}: still running after ${CLEANUP_TIMEOUT_MS} ms`);
    Deno.exit(code);
  }, CLEANUP_TIMEOUT_MS);
  while (cleanups.length > 0) {
    const { cleanup } = cleanups.pop()!;
    try {
      await cleanup();
    } catch (error) {
      console.error(
        `Cannot clean up after ${signal}: ${errorMessage(error)}`,
      );
    }
  }
  clearTimeout(timer);
  if (announce) console.error(`Cleaned up after ${signal}`);
  Deno.exit(code);
}
