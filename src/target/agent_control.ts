/**
 * A source's control connection to a target agent, on the agent's side:
 * the requests that prepare a gang's destinations, take the files they
 * need, and drive each destination through its switch-over. Requests run
 * concurrently (a gang switches over all at once) except `put`, whose file
 * follows it on the same connection; a bounded number at once (a few per
 * guest a gang may have), after which the next is read only once one has
 * been answered.
 *
 * A control connection that closes or falls silent while its gang is
 * under way abandons the gang: destinations already started keep their
 * guest, the others are stopped and their files removed.
 *
 * @module
 */
import { FrameType, frameTypeName, HEADER_BYTES, ProtocolError } from "../transfer/protocol.ts";
import {
  type Answer,
  decodeJson,
  encodeJson,
  type FrameChannel,
  type Request,
} from "./agent_protocol.ts";
import { checkFileRef } from "./machine_description.ts";
import type { AgentHost } from "./agent_host.ts";
import { AgentGang, type GangMachine, RESUMED_MARK } from "./agent_gang.ts";
import { checkGang, machineOf } from "./agent_machine.ts";
import { NotLoadedError } from "../qemu/destination.ts";
import { join } from "node:path";
import { errorMessage } from "../_errors.ts";

/** What a request does: its answer's fields. */
type Handler = (request: Request) => Promise<Record<string, unknown>>;

/** Longest wait a source may ask for in `run-when-loaded`. */
const MAX_WAIT_MS = 300_000;
/**
 * How long `run-when-loaded` waits for a destination's guest, from the
 * `timeoutMs` the source asked for: at most {@linkcode MAX_WAIT_MS}; none
 * (or a negative or garbage one) waits 30 s.
 */
export function loadWaitMs(asked: unknown): number {
  const ms = Number(asked);
  return ms >= 1 ? Math.min(ms, MAX_WAIT_MS) : 30_000;
}

/** Longest error message in an answer, in characters (as an ERROR frame's text). */
const MAX_ERROR_CHARS = 4000;

/**
 * Requests of one connection that run at once: a source asks a few per
 * guest of its gang (`run-when-loaded` and `state` of each, pings). A
 * source that asks more, or that does not read its answers, waits for
 * its requests to be read: they cost the agent nothing meanwhile.
 */
export function requestsAtOnce(maxGuests: number): number {
  return 2 * maxGuests + 16;
}

/** Serves one control connection until it closes. */
export class ControlSession {
  readonly #host: AgentHost;
  readonly #channel: FrameChannel;
  readonly #peer: string;
  #gang: AgentGang | undefined;
  /** The files the last `prepare` found missing, by hash, with their size: the only ones `put` takes. */
  #asked = new Map<string, number>();
  /** Destinations whose exit the log has told (a source asks of them every few seconds). */
  readonly #exitsLogged = new Set<string>();

  /** A session of an authenticated source. */
  constructor(host: AgentHost, channel: FrameChannel, peer: string) {
    this.#host = host;
    this.#channel = channel;
    this.#peer = peer;
  }

  /** Reads and answers requests until the source closes the connection, falls silent or breaks the protocol. */
  async run(): Promise<void> {
    const running = new Set<Promise<void>>();
    const most = requestsAtOnce(this.#host.options.maxGuests);
    try {
      for (;;) {
        // Answers never reject (#answer): one ends, the next request is read.
        while (running.size >= most) await Promise.race(running);
        const frame = await this.#channel.reader.next(this.#host.options.idleTimeoutMs);
        if (!frame) return;
        if (frame.type !== FrameType.Control) {
          throw new ProtocolError(`Expected a Control frame, got ${frameTypeName(frame.type)}`);
        }
        const request = parseRequest(decodeJson(frame.body, "A control request"));
        if (request.op === "put") {
          // Its file follows it: nothing else is read until it is taken.
          await this.#answer(request, () => this.#handle(request));
          continue;
        }
        const task = this.#answer(request, () => this.#handle(request));
        running.add(task);
        task.finally(() => running.delete(task));
      }
    } catch (error) {
      // The agent closed it itself: what the read says then ("operation canceled") is no failure.
      if (this.#host.stopping) {
        this.#host.log({
          event: "closed",
          connection: "control",
          peer: this.#peer,
          why: "the agent stops",
        });
        return;
      }
      this.#host.log({
        event: "failed",
        connection: "control",
        peer: this.#peer,
        // The channel's own reason when it closed the connection (a source that reads nothing).
        error: errorMessage(this.#channel.failure ?? error),
      });
    } finally {
      // Closed first: answers the source does not read must not hold up the abandonment.
      this.#channel.close();
      await Promise.allSettled(running);
      await this.#abandon();
    }
  }

  /** Does a request's work and answers it; never rejects (a rejection would end the agent). */
  async #answer(request: Request, work: () => Promise<Record<string, unknown>>): Promise<void> {
    let answer: Answer;
    try {
      answer = { id: request.id, ok: true, ...await work() };
    } catch (error) {
      // Messages quote what the source sent: bounded, so that the answer fits in a frame.
      answer = { id: request.id, ok: false, error: errorMessage(error).slice(0, MAX_ERROR_CHARS) };
      // The target's operator sees why a gang could not come (the source is told the same).
      if (request.op === "prepare") {
        this.#host.log({
          event: "prepare-refused",
          connection: "control",
          peer: this.#peer,
          error: answer.error,
        });
      }
    }
    let frame: Uint8Array;
    try {
      frame = encodeJson(FrameType.Control, answer);
    } catch (error) {
      frame = encodeJson(FrameType.Control, {
        id: request.id,
        ok: false,
        error: errorMessage(error),
      });
    }
    await this.#channel.write(frame).catch(() => {});
  }

  /**
   * The requests of a control connection (docs/agent.md), by op: the one
   * list of them. `hello` comes first, alone, before a session starts.
   */
  readonly #handlers = new Map<string, Handler>([
    ["ping", () => Promise.resolve({})],
    ["prepare", (request) => this.#prepare(request.guests)],
    ["check", async (request) => {
      // A dry run: what `prepare` would refuse, without starting anything.
      const { missing } = await checkGang(request.guests, this.#host);
      return { busy: this.#host.busy, missing };
    }],
    ["put", (request) => this.#put(request)],
    ["guests", async () => ({ guests: await this.#host.kept.list() })],
    ["state", (request) => this.#state(request)],
    ["run-when-loaded", (request) => this.#runWhenLoaded(request)],
    ["end-disk-copies", async (request) => {
      await this.#preparedGang(request).endDiskCopies(request.guest);
      return {};
    }],
    ["discard", async (request) => {
      const gang = this.#preparedGang(request);
      if (await gang.discard(stringList(request.guests, "guests")) === 0) this.#endGang();
      return {};
    }],
    ["release", async () => {
      // Every destination may have been discarded already, which ended the gang.
      const gang = this.#gang;
      if (!gang) return { kept: [] };
      const kept = await gang.end();
      this.#endGang();
      return { kept: await this.#host.kept.keep(kept) };
    }],
  ]);

  async #handle(request: Request): Promise<Record<string, unknown>> {
    const handler = this.#handlers.get(request.op);
    if (!handler) throw new Error(`Unknown request ${JSON.stringify(request.op)}`);
    return await handler(request);
  }

  /** The gang this connection prepared, which a request about its destinations needs. */
  #preparedGang(request: Request): AgentGang {
    if (!this.#gang) {
      throw new Error(`Cannot ${request.op}: no gang is prepared on this connection`);
    }
    return this.#gang;
  }

  async #state(request: Request): Promise<Record<string, unknown>> {
    const gang = this.#gang;
    if (gang?.names.includes(String(request.guest))) {
      const { destination } = gang.get(request.guest);
      const state = await destination.state();
      if (state.alive) return { state, note: "" };
      const note = await destination.exitNote();
      // Said here, once: the RAM connection's end reads as the source's doing in the log.
      if (!this.#exitsLogged.has(destination.name)) {
        this.#exitsLogged.add(destination.name);
        this.#host.log({
          event: "destination-exited",
          peer: this.#peer,
          guest: destination.name,
          note: note.trim(),
        });
      }
      return { state, note };
    }
    // A guest that moved here already: its gang is over.
    const state = await this.#host.kept.state(request.guest);
    if (!state) throw new Error(`No guest ${JSON.stringify(request.guest)} runs here`);
    return { state, note: "" };
  }

  async #runWhenLoaded(request: Request): Promise<Record<string, unknown>> {
    const gang = this.#preparedGang(request);
    const found = gang.get(request.guest);
    // Its disk must have one writer when it runs, its own device: a source that skipped
    // `end-disk-copies` could otherwise still write into it through the export.
    try {
      await gang.endDiskCopies(request.guest);
    } catch (error) {
      // Not started: its source may run again.
      return { loaded: false, error: errorMessage(error) };
    }
    const timeoutMs = loadWaitMs(request.timeoutMs);
    if (request.paused !== undefined && typeof request.paused !== "boolean") {
      throw new Error('Cannot run the guest: field "paused" must be true or false');
    }
    try {
      const state = await found.destination.runWhenLoaded(timeoutMs, {
        beforeRun: async () => {
          found.resumed = true;
          // Marked before `cont`: an agent that dies now and starts again must never take
          // it for a leftover.
          await Deno.writeTextFile(join(found.runDir, RESUMED_MARK), "");
        },
        paused: request.paused === true,
      });
      return { loaded: true, state };
    } catch (error) {
      if (error instanceof NotLoadedError) return { loaded: false, error: error.message };
      throw error;
    }
  }

  async #prepare(guests: unknown): Promise<Record<string, unknown>> {
    const host = this.#host;
    if (this.#gang) throw new Error("Cannot prepare a second gang on one connection");
    const { descriptions, resolved, missing } = await checkGang(guests, host);
    this.#asked = new Map(missing.map((ref) => [ref.sha256, ref.size]));
    if (missing.length > 0) return { missing };
    const machines: GangMachine[] = descriptions.map((description, i) => ({
      name: description.name,
      machine: machineOf(description, resolved[i]!, host.options.qemuBinary),
      copiedDisks: Object.keys(resolved[i]!.copiedDisks ?? {}).map(Number),
    }));
    const gang = await host.startGang(machines);
    this.#gang = gang;
    return { key: gang.key, guests: gang.names };
  }

  async #put(request: Request): Promise<Record<string, unknown>> {
    const ref = checkFileRef(request.file);
    const reader = this.#channel.reader;
    const idle = this.#host.options.idleTimeoutMs;
    // Every byte the source said it sends is read, whatever becomes of the file (a full disk, a
    // wrong hash, a file nobody asked for): the connection stays in step, and the source is told
    // why instead of finding its connection closed in the middle of its file.
    let left = ref.size;
    async function* pieces(): AsyncGenerator<Uint8Array> {
      while (left > 0) {
        const head = await reader.peek(HEADER_BYTES, idle, "a FileData frame");
        if (!head) throw new ProtocolError("Connection closed in the middle of a file");
        if (head[0] !== FrameType.FileData) {
          // Left unread: it is the source's next request.
          throw new ProtocolError(
            `Cannot take file "${ref.name}": a ${frameTypeName(head[0]!)} frame came after ${
              ref.size - left
            } of its ${ref.size} bytes`,
          );
        }
        const frame = (await reader.next(idle))!;
        left -= frame.body.length;
        yield frame.body;
      }
    }
    const dropRest = async () => {
      try {
        for await (const _ of pieces()) {
          // Dropped.
        }
      } catch {
        // The connection ended or the source moved on: the next read says which.
      }
    };
    if (this.#asked.get(ref.sha256) !== ref.size) {
      await dropRest();
      throw new Error(`Cannot take file "${ref.name}": no gang prepared here asked for it`);
    }
    let path: string;
    try {
      path = await this.#host.files.receive(ref, pieces());
    } catch (error) {
      await dropRest();
      throw error;
    }
    this.#asked.delete(ref.sha256);
    this.#host.log({
      event: "file",
      connection: "control",
      peer: this.#peer,
      name: ref.name,
      sha256: ref.sha256,
      path,
    });
    return {};
  }

  #endGang(): void {
    this.#gang = undefined;
    this.#host.endGang();
  }

  /** The source is gone: keep what took over its guest, stop the rest. */
  async #abandon(): Promise<void> {
    const gang = this.#gang;
    if (!gang) return;
    this.#gang = undefined;
    const kept = await gang.end(true);
    await this.#host.kept.keep(kept);
    this.#host.log({
      event: "abandoned",
      connection: "control",
      peer: this.#peer,
      kept: kept.map((k) => k.guest.name),
    });
    this.#host.endGang();
  }

  /** The gang of this session, for the RAM and device-state connections. */
  get gang(): AgentGang | undefined {
    return this.#gang;
  }
}

function parseRequest(object: Record<string, unknown>): Request {
  if (typeof object.id !== "number" || typeof object.op !== "string") {
    throw new ProtocolError("A control request needs a numeric id and an op");
  }
  return object as Request;
}

function stringList(value: unknown, field: string): string[] {
  if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) {
    throw new Error(`Field "${field}" must be a list of names`);
  }
  return value;
}
