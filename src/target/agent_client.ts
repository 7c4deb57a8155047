/**
 * A source's connections to a target agent: the control connection
 * (requests and their answers, files sent once) and the connections each
 * guest's device state takes. See docs/agent.md.
 *
 * @module
 */
import {
  connectTarget,
  type ConnectTargetOptions,
  formatAddress,
  type TargetAddress,
} from "../transport/connect_target.ts";
import {
  decodeText,
  FrameType,
  frameTypeName,
  HEADER_BYTES,
  readHeader,
} from "../transfer/protocol.ts";
import { withTimeout } from "../_delay.ts";
import {
  AGENT_VERSION,
  AgentError,
  type Answer,
  decodeJson,
  encodeFilePiece,
  encodeJson,
  FILE_PIECE_BYTES,
  FrameChannel,
  MAX_CONTROL_BYTES,
} from "./agent_protocol.ts";
import type { FileRef } from "./machine_description.ts";
import { errorMessage } from "../_errors.ts";

/** Options of {@linkcode AgentClient.connect}. */
export interface AgentClientOptions extends ConnectTargetOptions {
  /** The agent's token. */
  token?: string;
  /** Longest wait for an answer (a request may ask for more). Default 60 s. */
  answerTimeoutMs?: number;
}

/** How often the control connection says it is alive while nothing else is said. */
const PING_MS = 10_000;

/**
 * A request the agent never received: the connection had ended before it
 * was written. Unlike a request that went out and got no answer, it cannot
 * have been carried out.
 */
export class NotSentError extends Error {
  /** The connection's end, as {@linkcode AgentClient} saw it. */
  constructor(ended: Error) {
    super(ended.message, { cause: ended });
    this.name = "NotSentError";
  }
}

/** The control connection to a target agent. */
export class AgentClient {
  /** Where the agent listens. */
  readonly address: TargetAddress;
  /** What the agent said of itself. */
  readonly limits: { maxGuests: number; maxMemoryMiB: number };
  readonly #channel: FrameChannel;
  readonly #options: AgentClientOptions;
  readonly #waiting = new Map<number, (answer: Answer) => void>();
  #nextId = 1;
  #ended: Error | undefined;
  #ping: ReturnType<typeof setInterval> | undefined;
  /** Settles once the file being sent, if any, has all its pieces written. */
  #fileSent: Promise<void> = Promise.resolve();

  private constructor(
    address: TargetAddress,
    channel: FrameChannel,
    options: AgentClientOptions,
    limits: { maxGuests: number; maxMemoryMiB: number },
  ) {
    this.address = address;
    this.#channel = channel;
    this.#options = options;
    this.limits = limits;
  }

  /**
   * Connects (TLS with the CA, unless insecure) and presents the token.
   *
   * Requires `--allow-net` (the agent).
   *
   * @throws Error when the agent cannot be reached, its certificate is not
   * the CA's, or it refuses the token or is busy
   */
  static async connect(address: TargetAddress, options: AgentClientOptions): Promise<AgentClient> {
    const conn = await connectTarget(address, options);
    const channel = new FrameChannel(conn, { maxBody: MAX_CONTROL_BYTES, writeTimeoutMs: 30_000 });
    try {
      await channel.write(
        encodeJson(FrameType.Control, {
          id: 0,
          op: "hello",
          version: AGENT_VERSION,
          token: options.token ?? "",
        }),
      );
      const answer = await readAnswer(channel, options.answerTimeoutMs ?? 60_000);
      if (!answer.ok) throw new AgentError(answer.error);
      const client = new AgentClient(address, channel, options, {
        maxGuests: Number(answer.maxGuests),
        maxMemoryMiB: Number(answer.maxMemoryMiB),
      });
      client.#readAnswers();
      const ping = setInterval(() => client.request("ping").catch(() => {}), PING_MS);
      Deno.unrefTimer(ping);
      client.#ping = ping;
      return client;
    } catch (error) {
      channel.close();
      throw new Error(
        `Cannot use the target agent at ${formatAddress(address)}: ${errorMessage(error)}`,
        {
          cause: error,
        },
      );
    }
  }

  /**
   * Sends a request and waits for its answer.
   *
   * @throws AgentError with the agent's words when it says no, NotSentError when the connection
   * had ended before the request was written, or Error when it ends while the request waits
   */
  async request(
    op: string,
    fields: Record<string, unknown> = {},
    timeoutMs: number = this.#options.answerTimeoutMs ?? 60_000,
  ): Promise<Record<string, unknown>> {
    // A file's pieces must follow its put unbroken: a request (a ping) waits for the file.
    for (let file = this.#fileSent;; file = this.#fileSent) {
      await file;
      if (file === this.#fileSent) break;
    }
    return await this.#ask(op, fields, timeoutMs);
  }

  /** Writes a request at once (before its first await) and waits for its answer. */
  async #ask(
    op: string,
    fields: Record<string, unknown>,
    timeoutMs: number,
  ): Promise<Record<string, unknown>> {
    if (this.#ended) throw new NotSentError(this.#ended);
    const id = this.#nextId++;
    const answered = new Promise<Answer>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(id);
        reject(new Error(`The target agent did not answer "${op}" within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      this.#waiting.set(id, (answer) => {
        clearTimeout(timer);
        resolve(answer);
      });
    });
    await this.#channel.write(encodeJson(FrameType.Control, { id, op, ...fields }));
    const answer = await answered;
    if (!answer.ok) throw new AgentError(answer.error);
    return answer;
  }

  /**
   * Sends a file the agent lacks, in pieces after a `put` request.
   *
   * Requires `--allow-read` (the file).
   */
  async sendFile(ref: FileRef, path: string): Promise<void> {
    using file = await Deno.open(path);
    const previous = this.#fileSent;
    let sent!: () => void;
    this.#fileSent = new Promise((resolve) => sent = resolve);
    let answered: Promise<Record<string, unknown>> | undefined;
    const buffer = new Uint8Array(FILE_PIECE_BYTES);
    try {
      await previous;
      answered = this.#ask("put", { file: ref }, 300_000);
      // Awaited once the file is sent; a piece that cannot be sent must not leave it unhandled.
      answered.catch(() => {});
      for (let sent = 0; sent < ref.size;) {
        const got = await file.read(buffer.subarray(0, Math.min(buffer.length, ref.size - sent)));
        if (got === null) throw new Error(`it shrank while it was sent`);
        await this.#channel.write(encodeFilePiece(buffer.slice(0, got)));
        sent += got;
      }
    } catch (error) {
      throw new Error(`Cannot send "${path}" to the target agent: ${errorMessage(error)}`, {
        cause: error,
      });
    } finally {
      sent();
    }
    await answered;
  }

  /**
   * Opens a guest's device-state connection: the agent answers once it has
   * reached the destination's migration socket.
   *
   * @param key The gang's key, from the `prepare` answer
   */
  async openDeviceState(key: string, guest: string): Promise<Deno.Conn> {
    return await this.#openGuestStream(
      FrameType.DeviceState,
      { key, guest },
      `the device state of guest "${guest}"`,
    );
  }

  /**
   * Opens a connection to the NBD export of a guest's copied disk at its
   * destination: the agent answers once it has reached the export.
   *
   * @param key The gang's key, from the `prepare` answer
   * @param disk The disk's index in the guest's machine
   */
  async openDiskCopy(key: string, guest: string, disk: number): Promise<Deno.Conn> {
    return await this.#openGuestStream(
      FrameType.DiskCopy,
      { key, guest, disk },
      `disk ${disk} of guest "${guest}"`,
    );
  }

  /** A connection of one guest's stream, once the agent has accepted it with a frame of its type. */
  async #openGuestStream(
    type: typeof FrameType.DeviceState | typeof FrameType.DiskCopy,
    hello: Record<string, unknown>,
    what: string,
  ): Promise<Deno.Conn> {
    const conn = await connectTarget(this.address, this.#options);
    const channel = new FrameChannel(conn, { maxBody: MAX_CONTROL_BYTES, writeTimeoutMs: 30_000 });
    try {
      await channel.write(encodeJson(type, hello));
      // Read to the byte: what follows the answer (an NBD server's greeting) is the stream's.
      answerBody(
        await withTimeout(readFrameExactly(conn), 30_000, () => new Error("no answer in 30 s")),
        type,
      );
      return conn;
    } catch (error) {
      channel.close();
      throw new Error(`Cannot carry ${what}: ${errorMessage(error)}`, { cause: error });
    }
  }

  /** Closes the control connection; safe to call twice. */
  close(): void {
    clearInterval(this.#ping);
    this.#end(new Error("The connection to the target agent is closed"));
    this.#channel.close();
  }

  #readAnswers(): void {
    (async () => {
      for (;;) {
        const body = answerBody(await this.#channel.reader.next(), FrameType.Control);
        const answer = decodeJson(body, "An answer") as Answer;
        this.#waiting.get(answer.id)?.(answer);
        this.#waiting.delete(answer.id);
      }
    })().catch((error) => this.#end(error instanceof Error ? error : new Error(String(error))));
  }

  #end(error: Error): void {
    this.#ended ??= error;
    for (const [id, answer] of this.#waiting) answer({ id, ok: false, error: this.#ended.message });
    this.#waiting.clear();
  }
}

/** One frame, read without reading a byte past it. */
async function readFrameExactly(conn: Deno.Conn): Promise<{ type: number; body: Uint8Array }> {
  const header = readHeader(await readExactly(conn, HEADER_BYTES), MAX_CONTROL_BYTES);
  return { type: header.type, body: await readExactly(conn, header.bodyBytes) };
}

async function readExactly(conn: Deno.Conn, bytes: number): Promise<Uint8Array> {
  const buffer = new Uint8Array(bytes);
  for (let got = 0; got < bytes;) {
    const n = await conn.read(buffer.subarray(got));
    if (n === null) throw new Error("the agent closed the connection");
    got += n;
  }
  return buffer;
}

async function readAnswer(channel: FrameChannel, timeoutMs: number): Promise<Answer> {
  return decodeJson(
    answerBody(await channel.reader.next(timeoutMs), FrameType.Control),
    "The answer",
  ) as Answer;
}

/**
 * The body of a frame the agent answered with, of the frame type expected:
 * an ERROR frame is the agent's refusal, another type a broken agent.
 */
function answerBody(frame: { type: number; body: Uint8Array } | null, type: number): Uint8Array {
  if (!frame) throw new Error("the agent closed the connection");
  if (frame.type === FrameType.Error) throw new AgentError(decodeText(frame.body));
  if (frame.type !== type) {
    throw new Error(`the agent answered with a ${frameTypeName(frame.type)} frame`);
  }
  return frame.body;
}
