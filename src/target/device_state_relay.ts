/**
 * The source's end of a guest's device state at a remote target: a unix
 * socket on the source host that the source QEMU migrates into, carried
 * over a connection to the target agent (TLS unless insecure) into the
 * destination's own migration socket. QEMU's migration stream never
 * crosses the network in clear, and the target opens no port for it.
 *
 * @module
 */
import { closeQuietly } from "../_close_quietly.ts";
import { pipeBothWays } from "./_pipe.ts";

/** One guest's relay: listens once, carries one migration. */
export class DeviceStateRelay {
  /** The unix socket the source QEMU migrates to. */
  readonly path: string;
  readonly #listener: Deno.Listener;
  /** The connection to the agent, opened early: its handshake is not paid in the downtime. */
  readonly #agent: Promise<Deno.Conn>;
  /** Opens another one, if the early one failed. */
  readonly #reopen: () => Promise<Deno.Conn>;
  #conns: Deno.Conn[] = [];
  #error: Error | undefined;
  #done: Promise<void>;

  private constructor(
    path: string,
    listener: Deno.Listener,
    opened: Promise<Deno.Conn>,
    reopen: () => Promise<Deno.Conn>,
  ) {
    this.path = path;
    this.#listener = listener;
    this.#agent = opened;
    this.#agent.catch(() => {}); // awaited once the source QEMU connects
    this.#reopen = reopen;
    this.#done = this.#carry();
  }

  /**
   * Listens at `path`; the first connection to it is carried to `opened`
   * (the connection to the agent, opened early), or to a new one from
   * `reopen` when that one failed or was closed meanwhile.
   *
   * Requires `--allow-read`, `--allow-write` (the socket), and what `open` needs.
   */
  static listen(
    path: string,
    opened: Promise<Deno.Conn>,
    reopen: () => Promise<Deno.Conn>,
  ): DeviceStateRelay {
    return new DeviceStateRelay(path, Deno.listen({ transport: "unix", path }), opened, reopen);
  }

  /** Why carrying failed, if it did (for the migration's error message). */
  get error(): Error | undefined {
    return this.#error;
  }

  async #carry(): Promise<void> {
    let qemu: Deno.Conn;
    try {
      qemu = await this.#listener.accept();
    } catch {
      return; // closed before the source connected
    } finally {
      this.#stopListening();
    }
    this.#conns.push(qemu);
    try {
      const agent = await this.#agent.catch(() => this.#reopen());
      this.#conns.push(agent);
      await pipeBothWays(qemu, agent);
    } catch (error) {
      this.#error = error instanceof Error ? error : new Error(String(error));
    } finally {
      this.#closeConns();
    }
  }

  /** Stops listening and ends a migration still carried; safe to call twice. */
  async close(): Promise<void> {
    this.#stopListening();
    this.#closeConns();
    await this.#done;
    // Never used: the source QEMU did not connect.
    await this.#agent.then((conn) => conn.close()).catch(() => {});
  }

  #stopListening(): void {
    closeQuietly(this.#listener);
    try {
      Deno.removeSync(this.path);
    } catch {
      // Removed already.
    }
  }

  #closeConns(): void {
    for (const conn of this.#conns) {
      closeQuietly(conn);
    }
    this.#conns = [];
  }
}
