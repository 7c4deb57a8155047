/**
 * A source's `put` of a file the agent lacks, by a broken or hostile
 * source and on a host in trouble: a full disk, a file that stops short,
 * bytes that do not match, an agent killed half way through, an agent
 * that closes the connection in the middle of the file. The agent keeps
 * no partial file, tells the source why, and its control connection stays
 * in step. No QEMU is started: the gang never gets all its files.
 */
import { dirname, join } from "node:path";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { AgentProcess } from "../src/target/agent_process.ts";
import { AgentClient } from "../src/target/agent_client.ts";
import {
  AGENT_VERSION,
  decodeJson,
  encodeFilePiece,
  encodeJson,
  FrameChannel,
  MAX_CONTROL_BYTES,
} from "../src/target/agent_protocol.ts";
import { describeMachine } from "../src/target/describe_machine.ts";
import type { FileRef } from "../src/target/machine_description.ts";
import { runOrFail, sha256Hex } from "./_fixtures.ts";
import { FrameType } from "../src/transfer/protocol.ts";
import { delay } from "../src/_delay.ts";
import { eventOf, smallMachine } from "./_agent_fixtures.ts";
import { uniqueName } from "./qemu_helpers.ts";

const MiB = 2 ** 20;

/** A source speaking the control protocol frame by frame: requests as written, answers in order. */
class RawSource {
  readonly channel: FrameChannel;

  private constructor(channel: FrameChannel) {
    this.channel = channel;
  }

  static async connect(agent: AgentProcess): Promise<RawSource> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: agent.address.port });
    const source = new RawSource(
      new FrameChannel(conn, { maxBody: MAX_CONTROL_BYTES, writeTimeoutMs: 30_000 }),
    );
    await source.send({ id: 0, op: "hello", version: AGENT_VERSION });
    assertEquals((await source.answer()).ok, true);
    return source;
  }

  send(request: Record<string, unknown>): Promise<void> {
    return this.channel.write(encodeJson(FrameType.Control, request));
  }

  /** The next answer; fails when the agent closed the connection instead. */
  async answer(): Promise<Record<string, unknown>> {
    const frame = await this.channel.reader.next(30_000).catch(() => null);
    assert(frame, "the agent closed the control connection");
    return decodeJson(frame.body, "An answer");
  }

  /**
   * Has the agent ask for a file (`content`, or that many random bytes) as
   * a guest's kernel, as a gang that lacks it would, and starts its put
   * (id 2); the caller sends its bytes.
   */
  async startPut(content: number | Uint8Array): Promise<{ bytes: Uint8Array; ref: FileRef }> {
    const bytes = typeof content === "number" ? randomBytes(content) : content;
    const ref = { name: "vmlinuz-rt", sha256: sha256Hex(bytes), size: bytes.length };
    const description = await describeMachine(uniqueName("rt-put"), await smallMachine());
    await this.send({ id: 1, op: "prepare", guests: [{ ...description, kernel: ref }] });
    const answer = await this.answer();
    assert((answer.missing as FileRef[]).some((m) => m.sha256 === ref.sha256), "it is missing");
    await this.send({ id: 2, op: "put", file: ref });
    return { bytes, ref };
  }

  /** Sends `bytes` as FILE_DATA frames of 1 MiB; the agent may close the connection meanwhile. */
  async sendPieces(bytes: Uint8Array): Promise<void> {
    for (let at = 0; at < bytes.length; at += MiB) {
      await this.channel.write(encodeFilePiece(bytes.subarray(at, at + MiB)));
    }
  }

  close(): void {
    this.channel.close();
  }
}

function randomBytes(size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let at = 0; at < size; at += 65536) crypto.getRandomValues(bytes.subarray(at, at + 65536));
  return bytes;
}

function assertIncludes(text: unknown, part: string): void {
  assert(String(text).includes(part), `"${text}" does not say "${part}"`);
}

async function namesIn(dir: string): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name);
}

Deno.test("a put that fills the agent's disk is refused with the reason, leaves no partial file, and the source may go on", async () => {
  const runDir = await Deno.makeTempDir({ prefix: "gangway-rt-run-" });
  const files = join(runDir, "files");
  await Deno.mkdir(files);
  // Its mode as the agent makes it: a cache others may write is refused at start-up.
  await runOrFail("mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "gangway-rt-full", files);
  try {
    await using agent = await AgentProcess.start({ insecure: true, runDir });
    const source = await RawSource.connect(agent);
    try {
      const { bytes } = await source.startPut(3 * MiB);
      await source.sendPieces(bytes).catch(() => {});
      const put = await source.answer();
      assertEquals([put.id, put.ok], [2, false]);
      assertIncludes(put.error, `Cannot take file "vmlinuz-rt": No space left`);
      await source.send({ id: 3, op: "ping" });
      assertEquals(await source.answer(), { id: 3, ok: true });
      assertEquals(await namesIn(files), [], "files left in the cache");
    } finally {
      source.close();
    }
  } finally {
    await runOrFail("umount", files);
    await Deno.remove(runDir, { recursive: true });
  }
});

Deno.test("a put that stops short or does not match its SHA-256 keeps nothing, and the next request is answered", async () => {
  await using agent = await AgentProcess.start({ insecure: true });
  const source = await RawSource.connect(agent);
  try {
    // A third of the file, then another request.
    const { bytes, ref } = await source.startPut(3 * MiB);
    await source.sendPieces(bytes.subarray(0, MiB));
    await source.send({ id: 3, op: "ping" });
    const short = await source.answer();
    assertEquals([short.id, short.ok], [2, false]);
    assertIncludes(short.error, `came after ${MiB} of its ${3 * MiB} bytes`);
    assertEquals(await source.answer(), { id: 3, ok: true }, "the request after the short file");
    // Every byte, but not the file's.
    const other = randomBytes(3 * MiB);
    await source.send({ id: 4, op: "put", file: ref });
    await source.sendPieces(other);
    const wrong = await source.answer();
    assertEquals([wrong.id, wrong.ok], [4, false]);
    assertIncludes(wrong.error, "does not match its SHA-256");
    await source.send({ id: 5, op: "ping" });
    assertEquals(await source.answer(), { id: 5, ok: true });
    assertEquals(agent.server.events.filter((e) => e.event === "file"), []);
  } finally {
    source.close();
  }
});

Deno.test("an agent killed in the middle of a put leaves no partial file once it starts again", async () => {
  const runDir = await Deno.makeTempDir({ prefix: "gangway-rt-run-" });
  const files = join(runDir, "files");
  try {
    const agent = await AgentProcess.start({ insecure: true, runDir });
    try {
      const source = await RawSource.connect(agent);
      const { bytes } = await source.startPut(3 * MiB);
      await source.sendPieces(bytes.subarray(0, MiB));
      const deadline = performance.now() + 20_000;
      while (!(await namesIn(files).catch(() => [])).some((name) => name.endsWith(".part"))) {
        assert(performance.now() < deadline, "the agent never started writing the file");
        await delay(20);
      }
      Deno.kill(agent.server.process.pid, "SIGKILL");
      await agent.server.exited;
      source.close();
    } finally {
      await agent.stop();
    }
    assertEquals((await namesIn(files)).length, 1, "the partial file the killed agent left");
    await using again = await AgentProcess.start({ insecure: true, runDir });
    assertEquals(await namesIn(files), [], "files left in the cache");
    assert(await eventOf(again, (e) => e.event === "recovered" && e.partialFiles === 1, 5_000));
  } finally {
    await Deno.remove(runDir, { recursive: true });
  }
});

Deno.test("a source whose agent closes the connection in the middle of a file gets an error, not an unhandled rejection", async () => {
  // An agent that takes the hello, then hangs up on the first put.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    const conn = await listener.accept();
    const channel = new FrameChannel(conn, { maxBody: MAX_CONTROL_BYTES, writeTimeoutMs: 10_000 });
    await channel.reader.next(10_000);
    await channel.write(encodeJson(FrameType.Control, {
      id: 0,
      ok: true,
      maxGuests: 1,
      maxMemoryMiB: 1024,
    }));
    await channel.reader.next(10_000);
    channel.close();
  })();
  const path = await Deno.makeTempFile({ prefix: "gangway-rt-file-" });
  try {
    const bytes = randomBytes(32 * MiB);
    await Deno.writeFile(path, bytes);
    const client = await AgentClient.connect(
      { hostname: "127.0.0.1", port: (listener.addr as Deno.NetAddr).port },
      { insecure: true },
    );
    try {
      await assertRejects(
        () => client.sendFile({ name: "big", sha256: sha256Hex(bytes), size: bytes.length }, path),
        Error,
      );
      // An unhandled rejection would end the test (and a source process) here.
      await delay(100);
    } finally {
      client.close();
    }
  } finally {
    await served;
    listener.close();
    await Deno.remove(path);
  }
});

Deno.test("two sources putting the same file at once both succeed, and one whole file is kept", async () => {
  await using agent = await AgentProcess.start({ insecure: true });
  const [first, second] = [await RawSource.connect(agent), await RawSource.connect(agent)];
  try {
    const bytes = randomBytes(4 * MiB);
    const [a, b] = [await first.startPut(bytes), await second.startPut(bytes)];
    assertEquals(a.ref, b.ref);
    // Interleaved, a piece each.
    for (let at = 0; at < bytes.length; at += MiB) {
      await first.sendPieces(bytes.subarray(at, at + MiB));
      await second.sendPieces(bytes.subarray(at, at + MiB));
    }
    assertEquals([(await first.answer()).ok, (await second.answer()).ok], [true, true]);
    const files = agent.server.events.filter((e) => e.event === "file");
    assertEquals(files.length, 2);
    const path = String(files[0]!.path);
    assertEquals(sha256Hex(await Deno.readFile(path)), a.ref.sha256);
    assertEquals(await namesIn(dirname(path)), [a.ref.sha256], "the cache holds one whole file");
  } finally {
    first.close();
    second.close();
  }
});

Deno.test("a put naming a path, a NUL, a long name or a size out of range is refused by field, and the next request is answered", async () => {
  await using agent = await AgentProcess.start({ insecure: true });
  const source = await RawSource.connect(agent);
  try {
    const good = { name: "vmlinuz", sha256: "a".repeat(64), size: 4096 };
    const refused: [Record<string, unknown>, string][] = [
      [{ ...good, name: "../../etc/passwd" }, "file.name"],
      [{ ...good, name: "a/b" }, "file.name"],
      [{ ...good, name: "a\0b" }, "file.name"],
      [{ ...good, name: ".hidden" }, "file.name"],
      [{ ...good, name: "x".repeat(200) }, "file.name"],
      [{ ...good, sha256: "A".repeat(64) }, "file.sha256"],
      [{ ...good, size: 2 ** 36 + 1 }, "file.size"],
      [{ ...good, size: -1 }, "file.size"],
      [{ ...good, size: 1.5 }, "file.size"],
      [{ ...good, path: "/etc/shadow" }, "file.path"],
    ];
    let id = 10;
    for (const [file, field] of refused) {
      await source.send({ id: ++id, op: "put", file });
      const answer = await source.answer();
      assertEquals([answer.id, answer.ok], [id, false], JSON.stringify(file).slice(0, 80));
      assertIncludes(answer.error, `field "${field}"`);
    }
    await source.send({ id: 99, op: "ping" });
    assertEquals(await source.answer(), { id: 99, ok: true });
    assertEquals(agent.server.events.filter((e) => e.event === "file"), []);
  } finally {
    source.close();
  }
});

Deno.test("a put into a cache the agent cannot make is refused naming the file, and the source may go on", async () => {
  const runDir = await Deno.makeTempDir({ prefix: "gangway-rt-run-" });
  try {
    await using agent = await AgentProcess.start({ insecure: true, runDir });
    // Where the cache directory should be, a file, once the agent runs (it refuses to start so):
    // no directory can be made there.
    await Deno.remove(join(runDir, "files"));
    await Deno.writeTextFile(join(runDir, "files"), "");
    const source = await RawSource.connect(agent);
    try {
      const { bytes } = await source.startPut(2 * MiB);
      await source.sendPieces(bytes);
      const put = await source.answer();
      assertEquals([put.id, put.ok], [2, false]);
      assertIncludes(put.error, `Cannot take file "vmlinuz-rt": `);
      await source.send({ id: 3, op: "ping" });
      assertEquals(await source.answer(), { id: 3, ok: true });
    } finally {
      source.close();
    }
  } finally {
    await Deno.remove(runDir, { recursive: true });
  }
});

Deno.test("a put that sends more bytes than it said, or lies about the size, keeps no wrong file", async () => {
  await using agent = await AgentProcess.start({ insecure: true });
  const source = await RawSource.connect(agent);
  try {
    const { bytes, ref } = await source.startPut(2.5 * MiB);
    // Half a MiB too many, in the last frame: refused, and the connection stays in step.
    const more = new Uint8Array(3 * MiB);
    more.set(bytes);
    await source.sendPieces(more);
    const tooMany = await source.answer();
    assertEquals([tooMany.id, tooMany.ok], [2, false]);
    assertIncludes(tooMany.error, `more than ${ref.size} bytes arrived`);
    // A size other than the one asked for: refused, its bytes read and dropped.
    await source.send({ id: 3, op: "put", file: { ...ref, size: 2 * MiB } });
    await source.sendPieces(bytes.subarray(0, 2 * MiB));
    const lie = await source.answer();
    assertEquals([lie.id, lie.ok], [3, false]);
    assertIncludes(lie.error, "no gang prepared here asked for it");
    await source.send({ id: 4, op: "ping" });
    assertEquals(await source.answer(), { id: 4, ok: true });
    // The file, then one frame too many: the file is whole and kept; the extra frame is not a
    // request, and the connection is closed.
    await source.send({ id: 5, op: "put", file: ref });
    await source.sendPieces(bytes);
    await source.sendPieces(new Uint8Array(4096)).catch(() => {});
    assertEquals((await source.answer()).ok, true);
    const kept = agent.server.events.filter((e) => e.event === "file");
    assertEquals(kept.length, 1);
    assertEquals(sha256Hex(await Deno.readFile(String(kept[0]!.path))), ref.sha256);
    const frame = await source.channel.reader.next(30_000).catch(() => null);
    assertEquals(frame, null, "the connection after a frame that is not a request");
  } finally {
    source.close();
  }
});
