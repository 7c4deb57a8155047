/**
 * A receiver running in the test process, on a free loopback port, with a
 * fresh target directory, and a log of its events.
 *
 * @module
 */
import {
  type ReceivedGang,
  type ReceiverEvent,
  serveGangs,
  type ServeOptions,
} from "../src/transfer/receiver.ts";
import { listenForSenders } from "../src/transport/listen_for_senders.ts";

/** A running in-process receiver. */
export interface TestReceiver extends AsyncDisposable {
  port: number;
  dir: string;
  events: ReceiverEvent[];
  /** Resolves with the gangs received once the receiver is stopped. */
  stop(): Promise<ReceivedGang[]>;
  /** A plain TCP connection to it. */
  connect(): Promise<Deno.Conn>;
}

/** Options of {@linkcode startReceiver}: the receiver's, and TLS material (plain TCP without). */
export interface StartReceiverOptions extends Partial<ServeOptions> {
  tls?: { cert: string; key: string };
}

/** Starts a receiver into a new temporary directory (or `dir`, which is then not removed). */
export async function startReceiver(options: StartReceiverOptions = {}): Promise<TestReceiver> {
  const { tls, ...serveOptions } = options;
  const ownsDir = options.dir === undefined;
  const dir = options.dir ?? await Deno.makeTempDir({ prefix: "gangway-target-" });
  const listener = listenForSenders(
    { hostname: "127.0.0.1", port: 0 },
    tls ? { cert: tls.cert, key: tls.key } : { insecure: true },
  );
  const port = (listener.addr as Deno.NetAddr).port;
  const events: ReceiverEvent[] = [];
  const abort = new AbortController();
  const serving = serveGangs(listener, {
    ...serveOptions,
    dir,
    signal: abort.signal,
    log: (e) => events.push(e),
  });
  let stopped: Promise<ReceivedGang[]> | undefined;
  const stop = () => {
    if (!stopped) {
      abort.abort();
      stopped = serving.finally(() => ownsDir ? Deno.remove(dir, { recursive: true }) : undefined);
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
