/**
 * A client for the QEMU Machine Protocol over a unix socket: capability
 * negotiation, commands with ids and timeouts, and events. What the
 * messages mean (events, the version, error answers) is in
 * `qmp_messages.ts`.
 *
 * @module
 */
import { closeQuietly } from "../_close_quietly.ts";
import { withTimeout } from "../_delay.ts";
import { errorMessage } from "../_errors.ts";
import {
  greetingVersion,
  QmpError,
  type QmpEvent,
  type QmpVersion,
  toEvent,
} from "./qmp_messages.ts";

/** Options of {@linkcode QmpClient.connect}. */
export interface QmpConnectOptions {
  /** The guest's name, used in error messages. Default: the socket path. */
  guest?: string;
  /** Time allowed for the greeting and negotiation. Default 5000 ms. */
  timeoutMs?: number;
}

/** Options of {@linkcode QmpClient.execute}. */
export interface ExecuteOptions {
  /** Time allowed for the answer. Default 10000 ms. */
  timeoutMs?: number;
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** A function called with each event it listens to. */
export type QmpListener = (event: QmpEvent) => void;

const DEFAULT_COMMAND_TIMEOUT_MS = 10_000;
const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;

/**
 * A QMP connection to one QEMU. Commands may run concurrently; answers are
 * matched by id. When the socket dies (QEMU exited), every pending and later
 * command fails with an error naming the guest and the command.
 *
 * Requires `--allow-net`, `--allow-read` and `--allow-write`: Deno 2.9 checks all three
 * for a unix socket path.
 *
 * @example
 * ```ts
 * await using qmp = await QmpClient.connect("/tmp/vm1/qmp.sock", { guest: "vm1" });
 * const { status } = await qmp.execute<{ status: string }>("query-status");
 * const stopped = qmp.waitForEvent("STOP");
 * await qmp.execute("stop");
 * await stopped;
 * ```
 */
export class QmpClient implements AsyncDisposable {
  /** The guest's name, as used in error messages. */
  readonly guest: string;
  #conn: Deno.Conn;
  #nextId = 1;
  #pending = new Map<number, Pending>();
  #listeners = new Set<{ name: string; listener: QmpListener }>();
  #endListeners = new Set<() => void>();
  #writing: Promise<void> = Promise.resolve();
  #closedReason: string | undefined;
  #reader: Promise<void>;
  #greeting: Promise<QmpVersion>;
  #resolveGreeting!: (version: QmpVersion) => void;
  #rejectGreeting!: (error: Error) => void;
  #version: QmpVersion | undefined;
  #ended!: () => void;
  /** Resolves when the connection has ended (closed by either side). */
  readonly ended: Promise<void>;

  private constructor(conn: Deno.Conn, guest: string) {
    this.#conn = conn;
    this.guest = guest;
    this.ended = new Promise((resolve) => (this.#ended = resolve));
    this.#greeting = new Promise((resolve, reject) => {
      this.#resolveGreeting = resolve;
      this.#rejectGreeting = reject;
    });
    this.#greeting.catch(() => {}); // observed by connect(); never unhandled
    this.#reader = this.#readLoop();
  }

  /**
   * Connects to QEMU's QMP socket, reads the greeting and leaves capability
   * negotiation mode (`qmp_capabilities`).
   *
   * @throws Error naming the guest when the socket cannot be opened or QEMU
   * does not greet in time
   */
  static async connect(path: string, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const guest = options.guest ?? path;
    let conn: Deno.Conn;
    try {
      conn = await Deno.connect({ transport: "unix", path });
    } catch (error) {
      throw new Error(`Cannot connect to QMP of guest "${guest}": ${errorMessage(error)}`);
    }
    const client = new QmpClient(conn, guest);
    const timeoutMs = options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    try {
      client.#version = await withTimeout(
        client.#greeting,
        timeoutMs,
        () =>
          // QEMU serves one QMP client at a time: the next one waits, unanswered, in the queue.
          new Error(
            `Cannot connect to QMP of guest "${guest}": no greeting in ${timeoutMs} ms ` +
              `(QEMU serves one QMP client at a time: is another one connected to ${path}?)`,
          ),
      );
      await client.execute("qmp_capabilities", undefined, { timeoutMs });
    } catch (error) {
      await client.close();
      throw error;
    }
    return client;
  }

  /** QEMU's version, from the greeting. */
  get version(): QmpVersion {
    return this.#version!;
  }

  /** True once the connection has ended. */
  get closed(): boolean {
    return this.#closedReason !== undefined;
  }

  /**
   * Runs a command and returns its `return` value.
   *
   * @throws QmpError when QEMU answers with an error; Error when the
   * connection ends or no answer comes in time
   */
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    options: ExecuteOptions = {},
  ): Promise<T> {
    if (this.#closedReason !== undefined) {
      return Promise.reject(this.#commandError(command, this.#closedReason));
    }
    const id = this.#nextId++;
    const timeoutMs = options.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    const answer = new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(this.#commandError(command, `no answer in ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { command, resolve, reject, timer });
    });
    const message = JSON.stringify({ execute: command, ...(args && { arguments: args }), id });
    this.#send(message + "\n").catch((error) => {
      this.#settle(id, (p) => p.reject(this.#commandError(command, errorMessage(error))));
    });
    return answer as Promise<T>;
  }

  /**
   * Calls `listener` for every event named `name` (`"*"`: every event).
   *
   * @returns a function that removes the listener
   */
  on(name: string, listener: QmpListener): () => void {
    const entry = { name, listener };
    this.#listeners.add(entry);
    return () => this.#listeners.delete(entry);
  }

  /**
   * Waits for the next event named `name` that satisfies `predicate`.
   * Call it before the command that causes the event, then await it.
   *
   * @throws Error when it does not come within `timeoutMs` or the connection ends
   */
  waitForEvent(
    name: string,
    predicate: (event: QmpEvent) => boolean = () => true,
    timeoutMs = DEFAULT_COMMAND_TIMEOUT_MS,
  ): Promise<QmpEvent> {
    const what = `Cannot wait for event "${name}" on guest "${this.guest}"`;
    if (this.#closedReason !== undefined) {
      return Promise.reject(new Error(`${what}: ${this.#closedReason}`));
    }
    return new Promise((resolve, reject) => {
      const finish = (settle: () => void) => {
        clearTimeout(timer);
        off();
        offEnd();
        settle();
      };
      const timer = setTimeout(
        () => finish(() => reject(new Error(`${what}: none in ${timeoutMs} ms`))),
        timeoutMs,
      );
      const off = this.on(name, (event) => {
        if (predicate(event)) finish(() => resolve(event));
      });
      const offEnd = this.#onEnd(() =>
        finish(() => reject(new Error(`${what}: ${this.#closedReason}`)))
      );
    });
  }

  /**
   * Every event from now on, until the connection ends.
   *
   * @example
   * ```ts
   * import type { QmpClient } from "./qmp.ts";
   *
   * declare const qmp: QmpClient;
   * for await (const event of qmp.events()) console.log(event.event);
   * ```
   */
  async *events(): AsyncGenerator<QmpEvent, void, undefined> {
    const queue: QmpEvent[] = [];
    let wake: (() => void) | undefined;
    const off = this.on("*", (event) => {
      queue.push(event);
      wake?.();
    });
    const offEnd = this.#onEnd(() => wake?.());
    try {
      while (true) {
        const event = queue.shift();
        if (event) yield event;
        else if (this.closed) return;
        else await new Promise<void>((resolve) => (wake = resolve));
      }
    } finally {
      off();
      offEnd();
    }
  }

  /** Closes the connection; pending commands fail. Safe to call twice. */
  async close(): Promise<void> {
    this.#end("connection closed by the client");
    closeQuietly(this.#conn); // already closed by the reader when QEMU hung up
    await this.#reader;
  }

  /** Same as {@linkcode close}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #onEnd(callback: () => void): () => void {
    this.#endListeners.add(callback);
    return () => this.#endListeners.delete(callback);
  }

  #commandError(command: string, why: string): Error {
    return new Error(`Cannot run "${command}" on guest "${this.guest}": ${why}`);
  }

  #send(text: string): Promise<void> {
    // Chained so two concurrent commands never interleave partial writes.
    const write = this.#writing.then(async () => {
      const bytes = new TextEncoder().encode(text);
      for (let done = 0; done < bytes.length;) done += await this.#conn.write(bytes.subarray(done));
    });
    this.#writing = write.catch(() => {});
    return write;
  }

  #settle(id: number, action: (pending: Pending) => void): void {
    const pending = this.#pending.get(id);
    if (!pending) return; // timed out earlier: a late answer is dropped
    this.#pending.delete(id);
    clearTimeout(pending.timer);
    action(pending);
  }

  async #readLoop(): Promise<void> {
    const decoder = new TextDecoder();
    const buffer = new Uint8Array(64 * 1024);
    let text = "";
    let why = "QMP connection closed (QEMU exited?)";
    try {
      while (true) {
        const n = await this.#conn.read(buffer);
        if (n === null) break;
        text += decoder.decode(buffer.subarray(0, n), { stream: true });
        let newline;
        while ((newline = text.indexOf("\n")) >= 0) {
          const line = text.slice(0, newline).trim();
          text = text.slice(newline + 1);
          if (line) this.#dispatch(line);
        }
      }
    } catch (error) {
      // A reset is how a killed QEMU hangs up: same as an end of file.
      const reset = error instanceof Deno.errors.ConnectionReset;
      if (this.#closedReason === undefined && !reset) {
        why = `QMP connection failed: ${errorMessage(error)}`;
      }
    }
    this.#end(why);
    closeQuietly(this.#conn); // closed by close() already
  }

  #dispatch(line: string): void {
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(line);
    } catch {
      return; // QEMU only sends JSON objects; ignore anything else
    }
    if (typeof message !== "object" || message === null) return;
    if ("QMP" in message) {
      this.#resolveGreeting(greetingVersion(message));
    } else if ("event" in message) {
      this.#emit(toEvent(message));
    } else if (typeof message.id === "number") {
      this.#answer(message.id, message);
    }
  }

  #answer(id: number, message: Record<string, unknown>): void {
    this.#settle(id, (pending) => {
      if ("error" in message) {
        const error = message.error as { class?: string; desc?: string };
        pending.reject(
          new QmpError(
            this.guest,
            pending.command,
            error.class ?? "",
            error.desc ?? "unknown error",
          ),
        );
      } else {
        pending.resolve(message.return);
      }
    });
  }

  #emit(event: QmpEvent): void {
    for (const { name, listener } of [...this.#listeners]) {
      if (name !== event.event && name !== "*") continue;
      try {
        listener(event);
      } catch (error) {
        // As EventTarget does: a failing listener is reported, the connection lives on.
        reportError(error);
      }
    }
  }

  #end(why: string): void {
    if (this.#closedReason !== undefined) return;
    this.#closedReason = why;
    this.#rejectGreeting(new Error(`Cannot connect to QMP of guest "${this.guest}": ${why}`));
    for (const [id, pending] of this.#pending) {
      this.#settle(id, () => pending.reject(this.#commandError(pending.command, why)));
    }
    for (const listener of [...this.#endListeners]) listener();
    this.#ended();
  }
}
