/**
 * A receiver running in the test process, on a free loopback port, with a
 * fresh target directory, and a log of its events.
 *
 * @module
 */
import {
  type ReceivedGang,
  type ReceiverEvent,
  type ReceiverOptions,
  serveGangs,
} from "../src/transfer/receiver.ts";

/** A running in-process receiver. */
export interface TestReceiver extends AsyncDisposable {
  port: number;
  dir: string;
  events: ReceiverEvent[];
  /** Resolves with the gangs received once the receiver is stopped. */
  stop(): Promise<ReceivedGang[]>;
  connect(): Promise<Deno.Conn>;
}

/** Starts a receiver into a new temporary directory. */
export async function startReceiver(options: Partial<ReceiverOptions> = {}): Promise<TestReceiver> {
  const dir = await Deno.makeTempDir({ prefix: "gangway-target-" });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const events: ReceiverEvent[] = [];
  const abort = new AbortController();
  const serving = serveGangs(listener, {
    dir,
    ...options,
    signal: abort.signal,
    log: (e) => events.push(e),
  });
  let stopped: Promise<ReceivedGang[]> | undefined;
  const stop = () => {
    if (!stopped) {
      abort.abort();
      stopped = serving.finally(() => Deno.remove(dir, { recursive: true }));
    }
    return stopped;
  };
  return {
    port,
    dir,
    events,
    stop,
    connect: () => Deno.connect({ hostname: "127.0.0.1", port }),
    async [Symbol.asyncDispose]() {
      await stop();
    },
  };
}
