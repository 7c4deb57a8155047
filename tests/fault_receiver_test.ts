import { assert, assertEquals, assertSameBytes } from "./_assert.ts";
import { Gang } from "../src/scan/gang.ts";
import { transferGang } from "../src/transfer/transfer_gang.ts";
import { randomSeed } from "../src/transfer/seed.ts";
import { hashPages } from "../src/native/hashing.ts";
import { PAGE_SIZE } from "../src/native/ram_file.ts";
import { FrameReader } from "../src/transfer/frame_io.ts";
import { FrameType, PROTOCOL_VERSION } from "../src/transfer/protocol.ts";
import { encodeHello } from "../src/transfer/hello_frame.ts";
import { pagesFrameBytes, writePagesFrame } from "../src/transfer/page_frames.ts";
import { runCli, spawnReceiver } from "./_cli.ts";
import { makeRamFile, patternPage, readRamFile, removeFiles, shmPath } from "./_fixtures.ts";
import { startReceiver } from "./_transfer.ts";
import { connectTarget } from "../src/transport/connect_target.ts";
import { makeLabCerts } from "./tls_fixtures.ts";
import { waitFor } from "./fault_fixtures.ts";
import { RECEIVE_PERMISSIONS, ReceiverProcess } from "../src/target/receiver_process.ts";

const RECEIVE = [...RECEIVE_PERMISSIONS];

/** The text of the next ERROR frame on conn, or "" when it closes first. */
async function errorText(conn: Deno.Conn): Promise<string> {
  const reader = new FrameReader(conn);
  for (;;) {
    const frame = await reader.next(20_000);
    if (!frame) return "";
    if (frame.type === FrameType.Error) return new TextDecoder().decode(frame.body);
  }
}

Deno.test("a receiver refuses a directory others may write, and makes a missing one private", async () => {
  const parent = await Deno.makeTempDir({ prefix: "gangway-target-" });
  try {
    const open = `${parent}/open`;
    await Deno.mkdir(open);
    await Deno.chmod(open, 0o777);
    const refused = await runCli(
      "receive",
      ["--listen", "127.0.0.1:0", "--dir", open, "--insecure"],
      { permissions: RECEIVE },
    );
    assertEquals(refused.code, 1);
    assert(
      refused.stderr.includes(
        `Cannot use the target directory "${open}": group or others may write it (mode 0777)`,
      ),
      refused.stderr,
    );
    // In /dev/shm, where Deno would ask for --allow-all to make or look at a directory.
    const missing = shmPath("receive-dir");
    try {
      await using _receiver = await spawnReceiver(missing, ["--insecure"]);
      assertEquals((await Deno.stat(missing)).mode! & 0o777, 0o700);
    } finally {
      await Deno.remove(missing, { recursive: true });
    }
  } finally {
    await Deno.remove(parent, { recursive: true });
  }
});

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
      second.stderr.includes(
        `Cannot receive into "${dir}": another gangway receiver or agent is using it`,
      ),
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
      {
        pages: Uint32Array.of(0),
        ids: Uint32Array.of(0),
        hashes: BigUint64Array.of(hashPages(page, 1, 5n).hashes[0]!),
      },
      page,
      Uint16Array.of(0),
      5n,
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
      (await transferGang(gang, await receiver.connect())).verified,
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

Deno.test("when every handshake slot is taken, the oldest pending handshake gives way to a new connection", async () => {
  await using receiver = await startReceiver({
    maxPendingHandshakes: 2,
    handshakeTimeoutMs: 20_000,
  });
  const silent = [await receiver.connect(), await receiver.connect()];
  const path = makeRamFile(shmPath("limit"), [patternPage(4)]);
  try {
    const third = await receiver.connect();
    silent.push(third);
    assertEquals(
      await errorText(silent[0]!),
      "Handshake given up: newer connections from loopback needed the slot",
      "the oldest is told and closed",
    );
    assertEquals(await silent[0]!.read(new Uint8Array(8)), null);
    using gang = Gang.open([{ name: "vm", path }], { seed: randomSeed() });
    assert(
      (await transferGang(gang, await receiver.connect())).verified,
      "a sender gets in while the slots are full",
    );
    assertEquals(
      await errorText(silent[1]!),
      "Handshake given up: newer connections from loopback needed the slot",
    );
    assert(
      !receiver.events.some((e) =>
        e.event === "failed" && e.peer.endsWith(`:${(third.localAddr as Deno.NetAddr).port}`)
      ),
      "the newest silent peer still waits",
    );
  } finally {
    for (const conn of silent) conn.close();
    await removeFiles(path);
  }
});

Deno.test("silent peers connecting all the time keep no sender out", async () => {
  // 10 silent TLS connections a second for 12 s (the review locked senders out with 1.6 a
  // second): the default 16 slots (8 per address) are always full, and a sender starts every 2 s.
  await using certs = await makeLabCerts();
  await using receiver = await startReceiver({ tls: certs, token: certs.token });
  const target = { hostname: "127.0.0.1", port: receiver.port };
  const path = makeRamFile(shmPath("crowded"), [patternPage(5), "hole", patternPage(6)]);
  const silent: Deno.Conn[] = [];
  const started = performance.now();
  const flooding = (async () => {
    for (let i = 0; performance.now() - started < 12_000; i++) {
      silent.push(await Deno.connect(target));
      const next = started + (i + 1) * 100;
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, next - performance.now())));
    }
  })();
  try {
    const sends: boolean[] = [];
    for (let i = 0; i < 6; i++) {
      const next = started + 1000 + i * 2000; // the flood has filled every slot by then
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, next - performance.now())));
      using gang = Gang.open([{ name: `vm${i}`, path }], { seed: randomSeed() });
      const conn = await connectTarget(target, { ca: certs.ca });
      sends.push((await transferGang(gang, conn, { token: certs.token })).verified);
    }
    await flooding;
    assertEquals(sends, [true, true, true, true, true, true], "every sender got through");
    const evicted = receiver.events.filter((e) =>
      e.event === "failed" && e.error.startsWith("Handshake given up")
    );
    assert(evicted.length >= 60, `the slots were full all along (${evicted.length} given up)`);
  } finally {
    await flooding.catch(() => {});
    for (const conn of silent) conn.close();
    await removeFiles(path);
  }
});

Deno.test("a receiver out of file descriptors says so, and accepts again once connections close", async () => {
  // A receive child limited to 48 descriptors (it uses about 25 of them by itself); TLS peers
  // that never shake hands keep theirs (see docs/security.md) until they leave.
  await using certs = await makeLabCerts();
  const dir = await Deno.makeTempDir({ prefix: "gangway-target-" });
  const path = makeRamFile(shmPath("descriptors"), [patternPage(7), patternPage(8)]);
  const silent: Deno.Conn[] = [];
  try {
    await using receiver = await ReceiverProcess.start({
      dir,
      commandPrefix: ["prlimit", "--nofile=48"],
      args: certs.receiverArgs,
    });
    const target = { hostname: "127.0.0.1", port: receiver.port };
    const outOfDescriptors = () =>
      receiver.events.some((e) =>
        e.event === "accept-failed" && String(e.error).includes("Too many open files")
      );
    while (!outOfDescriptors() && silent.length < 200) silent.push(await Deno.connect(target));
    await waitFor(outOfDescriptors, "the receiver's account of running out of descriptors");
    for (const conn of silent.splice(0)) conn.close();
    using gang = Gang.open([{ name: "vm", path }], { seed: randomSeed() });
    const report = await transferGang(gang, await connectTarget(target, { ca: certs.ca }), {
      token: certs.token,
    });
    assert(report.verified, "a sender is served once descriptors are free again");
    assertSameBytes(readRamFile(`${dir}/vm`), readRamFile(path));
  } finally {
    for (const conn of silent) conn.close();
    await removeFiles(path);
    await Deno.remove(dir, { recursive: true });
  }
});
