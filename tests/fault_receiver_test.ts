import { assert, assertEquals, assertSameBytes } from "./_assert.ts";
import { Gang } from "../src/scan/gang.ts";
import { migrateGang } from "../src/transfer/migrate_gang.ts";
import { randomSeed } from "../src/transfer/seed.ts";
import { hashPages } from "../src/native/hashing.ts";
import { PAGE_SIZE } from "../src/native/ram_file.ts";
import { FrameReader } from "../src/transfer/frame_io.ts";
import {
  encodeHello,
  FrameType,
  pagesFrameBytes,
  PROTOCOL_VERSION,
  writePagesFrame,
} from "../src/transfer/protocol.ts";
import { runCli, spawnReceiver } from "./_cli.ts";
import { makeRamFile, patternPage, readRamFile, removeFiles, shmPath } from "./_fixtures.ts";
import { startReceiver } from "./_transfer.ts";
import { waitFor } from "./fault_fixtures.ts";

const RECEIVE = [
  "--allow-ffi",
  "--allow-read",
  "--allow-write",
  "--allow-net",
  "--allow-env=GANGWAY_LIB",
];

/** The text of the next ERROR frame on conn, or "" when it closes first. */
async function errorText(conn: Deno.Conn): Promise<string> {
  const reader = new FrameReader(conn);
  for (;;) {
    const frame = await reader.next(20_000);
    if (!frame) return "";
    if (frame.type === FrameType.Error) return new TextDecoder().decode(frame.body);
  }
}

Deno.test("a second receiver on the same directory refuses to start", async () => {
  const dir = await Deno.makeTempDir({ prefix: "gangway-target-" });
  try {
    await using _first = await spawnReceiver(dir, ["--insecure"]);
    const second = await runCli(
      "receive",
      ["--listen", "127.0.0.1:0", "--dir", dir, "--insecure"],
      { permissions: RECEIVE },
    );
    assertEquals(second.code, 1);
    assert(
      second.stderr.includes(`Cannot receive into "${dir}": another receiver is using it`),
      second.stderr,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a sender that goes quiet mid-migration is dropped after the idle timeout, its files discarded", async () => {
  await using receiver = await startReceiver({ idleTimeoutMs: 500 });
  const conn = await receiver.connect();
  try {
    const page = patternPage(3);
    const frame = new Uint8Array(pagesFrameBytes(1));
    writePagesFrame(
      frame,
      0,
      Uint32Array.of(0),
      Uint32Array.of(0),
      BigUint64Array.of(hashPages(page, 1, 5n).hashes[0]!),
      page,
      Uint16Array.of(0),
    );
    const hello = encodeHello({
      version: PROTOCOL_VERSION,
      pageSize: PAGE_SIZE,
      seed: 5n,
      token: "",
      guests: [{ name: "quiet", size: 8 * PAGE_SIZE }],
    });
    await conn.write(new Uint8Array([...hello, ...frame]));
    const started = performance.now();
    assertEquals(await errorText(conn), "No data for 0.5 s while waiting for a frame header");
    assert(performance.now() - started < 15_000);
    assertEquals([...Deno.readDirSync(receiver.dir)], [], "the partial guest is gone");
  } finally {
    conn.close();
  }
  const path = makeRamFile(shmPath("after-quiet"), [patternPage(1), patternPage(2)]);
  try {
    using gang = Gang.open([{ name: "vm", path }], { seed: randomSeed() });
    assert(
      (await migrateGang(gang, await receiver.connect())).verified,
      "the next sender is served",
    );
    assertSameBytes(readRamFile(`${receiver.dir}/vm`), readRamFile(path));
  } finally {
    await removeFiles(path);
  }
});

Deno.test("a peer that says nothing is told and closed after the handshake timeout", async () => {
  await using receiver = await startReceiver({ handshakeTimeoutMs: 500 });
  const conn = await receiver.connect();
  try {
    assertEquals(await errorText(conn), "No handshake within 0.5 s");
    assertEquals(await conn.read(new Uint8Array(8)), null, "then the connection is closed");
  } finally {
    conn.close();
  }
});

Deno.test("connections beyond the handshake limit are closed at once, and the others still served", async () => {
  await using receiver = await startReceiver({ maxPendingHandshakes: 2, handshakeTimeoutMs: 5000 });
  const silent = [await receiver.connect(), await receiver.connect()];
  const path = makeRamFile(shmPath("limit"), [patternPage(4)]);
  try {
    const extra = await receiver.connect();
    try {
      assertEquals(await extra.read(new Uint8Array(8)), null, "the third is closed at once");
    } finally {
      extra.close();
    }
    const refused = receiver.events.find((e) => e.event === "failed");
    assert(
      refused?.event === "failed" &&
        refused.error === "Too many connections in their handshake (limit 2)",
      JSON.stringify(receiver.events),
    );
    silent.pop()!.close(); // a slot frees up once a silent peer leaves
    await waitFor(() => receiver.events.length >= 2, "the departed peer's failure");
    using gang = Gang.open([{ name: "vm", path }], { seed: randomSeed() });
    assert((await migrateGang(gang, await receiver.connect())).verified);
  } finally {
    for (const conn of silent) conn.close();
    await removeFiles(path);
  }
});
