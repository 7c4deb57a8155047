import { assert, assertEquals, assertRejects, assertSameBytes, assertThrows } from "./_assert.ts";
import { checkReceiverOptions, MAX_GUESTS } from "../src/transfer/receiver_options.ts";
import { Gang } from "../src/scan/gang.ts";
import { transferGang } from "../src/transfer/transfer_gang.ts";
import { randomSeed } from "../src/transfer/seed.ts";
import { PAGE_SIZE } from "../src/native/ram_file.ts";
import { hashPages, zeroPageHash } from "../src/native/hashing.ts";
import { encodeDone, encodeGuestDone, guestDigest } from "../src/transfer/digests.ts";
import {
  encodeRoundEnd,
  FrameType,
  HEADER_BYTES,
  PROTOCOL_VERSION,
  writeHeader,
} from "../src/transfer/protocol.ts";
import { badGuestName, encodeHello, type Hello } from "../src/transfer/hello_frame.ts";
import {
  pagesFrameBytes,
  pairsFrameBytes,
  writePagesFrame,
  writePairsFrame,
} from "../src/transfer/page_frames.ts";
import { FrameReader } from "../src/transfer/frame_io.ts";
import { receiveGang } from "../src/transfer/receiver.ts";
import { NOT_AN_AGENT, TOKEN_REFUSAL } from "../src/transfer/sender_handshake.ts";
import { encodeJson } from "../src/target/agent_protocol.ts";
import { AgentClient } from "../src/target/agent_client.ts";
import { makeRamFile, patternPage, readRamFile, removeFiles, shmPath } from "./_fixtures.ts";
import { startReceiver, type TestReceiver } from "./_transfer.ts";

const hello = (guests: Hello["guests"], version = PROTOCOL_VERSION): Uint8Array =>
  encodeHello({ version, pageSize: PAGE_SIZE, seed: 7n, token: "", guests });

const oneGuest = hello([{ name: "vm", size: 4 * PAGE_SIZE }]);

/** A PAGES frame for guest 0 carrying `content` at `page` as content `id`. */
function pagesFrame(page: number, content: Uint8Array, id = 0, hash?: bigint): Uint8Array {
  const frame = new Uint8Array(pagesFrameBytes(1));
  writePagesFrame(
    frame,
    0,
    {
      pages: Uint32Array.of(page),
      ids: Uint32Array.of(id),
      hashes: BigUint64Array.of(hash ?? hashPages(content, 1, 7n).hashes[0]!),
    },
    content,
    Uint16Array.of(0),
    7n,
  );
  return frame;
}

/** A DELTAS frame for guest 0: `content` (as its data, unchanged) at `page` as content `id`, from `base`. */
function deltasFrame(page: number, content: Uint8Array, id: number, base: number): Uint8Array {
  const frame = new Uint8Array(pagesFrameBytes(1, PAGE_SIZE, true));
  const hashes = hashPages(content, 1, 7n).hashes;
  const entries = {
    pages: Uint32Array.of(page),
    ids: Uint32Array.of(id),
    hashes,
    bases: Uint32Array.of(base),
  };
  writePagesFrame(frame, 0, entries, content, Uint16Array.of(0), 7n);
  return frame;
}

function refsFrame(page: number, id: number): Uint8Array {
  const frame = new Uint8Array(pairsFrameBytes(1));
  writePairsFrame(frame, FrameType.Refs, 0, Uint32Array.of(page), Uint32Array.of(id));
  return frame;
}

function zerosFrame(firsts: number[], counts: number[]): Uint8Array {
  const frame = new Uint8Array(pairsFrameBytes(firsts.length));
  writePairsFrame(frame, FrameType.Zeros, 0, Uint32Array.from(firsts), Uint32Array.from(counts));
  return frame;
}

/** Sends raw bytes as a sender would, and returns the text of the receiver's ERROR (or "" if none). */
async function rawSession(receiver: TestReceiver, ...chunks: Uint8Array[]): Promise<string> {
  const conn = await receiver.connect();
  try {
    for (const chunk of chunks) await conn.write(chunk);
    await conn.closeWrite();
    const reader = new FrameReader(conn);
    for (;;) {
      const frame = await reader.next(10_000);
      if (!frame) return "";
      if (frame.type === FrameType.Error) return new TextDecoder().decode(frame.body);
    }
  } catch (error) {
    return `connection error: ${error}`;
  } finally {
    conn.close();
  }
}

Deno.test("the receiver refuses bad input with a clear error, then completes a proper migration", async (t) => {
  await using receiver = await startReceiver({
    maxGuestBytes: 2 ** 20,
    maxGuests: 3,
    maxGangBytes: 1.5 * 2 ** 20,
    maxFrameBytes: 65536,
  });
  const header = (type: number, bodyBytes: number, flags = 0) => {
    const bytes = new Uint8Array(HEADER_BYTES);
    writeHeader(
      new DataView(bytes.buffer),
      0,
      type as typeof FrameType.Hello,
      0,
      bodyBytes,
      flags,
    );
    return bytes;
  };
  const guests = (n: number, size: number) =>
    Array.from({ length: n }, (_, i) => ({ name: `g${i}`, size }));
  const cases: [string, Uint8Array[], string][] = [
    [
      "garbage",
      [new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n")],
      "exceeds the limit",
    ],
    [
      "a stream cut inside the handshake",
      [oneGuest.subarray(0, 20)],
      "Connection closed in the middle of a Hello frame",
    ],
    [
      "an unknown protocol version",
      [hello([{ name: "vm", size: PAGE_SIZE }], 99)],
      "Unsupported protocol version 99",
    ],
    ["a data frame before the handshake", [header(FrameType.Pages, 0)], "Expected a Hello frame"],
    [
      "a guest name that climbs out of the directory",
      [hello([{ name: "../x", size: PAGE_SIZE }])],
      'guest name "../x" is refused',
    ],
    ["a guest name with a slash", [hello([{ name: "a/b", size: PAGE_SIZE }])], "contains a slash"],
    [
      "a guest name with a C1 control character",
      [hello([{ name: "vm\u009b2J", size: PAGE_SIZE }])],
      "a control, bidirectional-control or line-separator character",
    ],
    [
      "a guest name that reverses what a log shows after it",
      [hello([{ name: "vm\u202egpj.exe", size: PAGE_SIZE }])],
      "a control, bidirectional-control or line-separator character",
    ],
    [
      "a guest name with a line separator",
      [hello([{ name: "vm\u2028lab: verified", size: PAGE_SIZE }])],
      "a control, bidirectional-control or line-separator character",
    ],
    ["an oversized guest", [hello([{ name: "big", size: 2 ** 30 }])], "over the limit of 1048576"],
    ["more guests than the limit", [hello(guests(4, PAGE_SIZE))], "4 guests exceed the limit of 3"],
    [
      "a gang over the gang limit",
      [hello(guests(2, 2 ** 20))],
      "the gang has 2097152 bytes, over the limit of 1572864",
    ],
    [
      "a handshake frame too large for any HELLO",
      [header(FrameType.Hello, 100_000)],
      "Hello frame of 100000 bytes exceeds the limit",
    ],
    [
      "a frame over the frame limit",
      [oneGuest, header(FrameType.Pages, 65537)],
      "Pages frame of 65537 bytes exceeds the limit of 65536",
    ],
    [
      "a frame with flags this version lacks",
      [oneGuest, header(FrameType.Refs, 0, 1)],
      `Refs frame has flags 1, which version ${PROTOCOL_VERSION} does not define`,
    ],
    ["two guests of one name", [
      hello([{ name: "a", size: PAGE_SIZE }, { name: "a", size: PAGE_SIZE }]),
    ], 'two guests are named "a"'],
    ["a page outside the guest", [oneGuest, pagesFrame(4, patternPage(1))], "points at page 4"],
    [
      "a page that does not match its frame's digest (named by guest, not by the target's path)",
      [oneGuest, pagesFrame(0, patternPage(1), 0, 12345n)],
      'Pages frame of 1 pages of guest "vm" (from page 0) does not match its digest',
    ],
    [
      "more contents than a gang may register (one page overwritten again and again)",
      [
        hello([{ name: "vm", size: PAGE_SIZE }]),
        ...Array.from({ length: 9 }, (_, id) => pagesFrame(0, patternPage(id + 1), id)),
      ],
      "frame brings contents past the 8 a gang of 1 pages may register",
    ],
    [
      "a content id out of order",
      [oneGuest, pagesFrame(0, patternPage(1), 5)],
      "brings content id 5, expected 0",
    ],
    ["a reference to a content never sent", [oneGuest, refsFrame(1, 0)], "Reference to content 0"],
    [
      "a ZEROS frame whose runs cover more pages than a frame carries (a guest five times over)",
      [hello([{ name: "vm", size: 2 ** 20 }]), zerosFrame(Array(5).fill(0), Array(5).fill(256))],
      "Zeros frame covers 1280 pages, over the 1024 of a frame",
    ],
    [
      "a delta from a content never sent",
      [oneGuest, deltasFrame(1, patternPage(2), 0, 0)],
      "takes content 0 as a base, which is not one the target held before it",
    ],
    [
      "a delta from a content no page holds any more",
      [
        oneGuest,
        pagesFrame(0, patternPage(1)),
        pagesFrame(0, patternPage(2), 1),
        deltasFrame(1, patternPage(3), 2, 0),
      ],
      "takes content 0 as a base, which no page of the target holds",
    ],
    [
      "a delta from a content only a short last page holds",
      [
        hello([{ name: "vm", size: PAGE_SIZE + 100 }]),
        pagesFrame(1, new Uint8Array(PAGE_SIZE).fill(7, 0, 100)),
        deltasFrame(0, patternPage(2), 1, 0),
      ],
      "takes content 0 as a base, which cannot be one",
    ],
    [
      "a delta from a content its own frame brings",
      [oneGuest, pagesFrame(0, patternPage(1)), deltasFrame(1, patternPage(2), 1, 1)],
      "takes content 1 as a base, which is not one the target held before it (the frame brings contents 1 on)",
    ],
    ["an unknown frame type", [oneGuest, header(99, 0)], "Unexpected unknown type 99 frame"],
    [
      "a round out of order",
      [oneGuest, encodeRoundEnd(3, false)],
      "Round 3 ended, expected round 1",
    ],
    ["a frame for a guest the gang lacks", [
      oneGuest,
      (() => {
        const f = refsFrame(0, 0);
        new DataView(f.buffer).setUint16(2, 9, true);
        return f;
      })(),
    ], "guest 9, which the gang does not have"],
    [
      "a sender that leaves mid-migration",
      [oneGuest, pagesFrame(0, patternPage(1))],
      "closed the connection before the migration was done",
    ],
  ];
  for (const [label, chunks, message] of cases) {
    await t.step(label, async () => {
      const error = await rawSession(receiver, ...chunks);
      assert(error.includes(message), `expected "${message}" in: ${error}`);
    });
  }
  assertEquals(receiver.events.filter((e) => e.event === "failed").length, cases.length);

  await t.step("then a proper migration", async () => {
    const path = makeRamFile(shmPath("after-bad"), [patternPage(1), "hole", patternPage(1)]);
    try {
      using gang = Gang.open([{ name: "vm", path }], { seed: randomSeed() });
      const report = await transferGang(gang, await receiver.connect());
      assert(report.verified);
      assertSameBytes(readRamFile(`${receiver.dir}/vm`), readRamFile(path));
    } finally {
      await removeFiles(path);
    }
  });
});

Deno.test("the receiver removes the files it created for a gang that failed", async () => {
  await using receiver = await startReceiver();
  const error = await rawSession(receiver, oneGuest, pagesFrame(9, patternPage(1)));
  assert(error.includes("points at page 9"), error);
  const names = [...Deno.readDirSync(receiver.dir)].map((e) => e.name);
  assertEquals(names, []);
});

Deno.test("the receiver refuses a second sender while a gang is in progress", async () => {
  await using receiver = await startReceiver();
  const first = await receiver.connect();
  try {
    await first.write(oneGuest);
    const reader = new FrameReader(first);
    assertEquals((await reader.next(10_000))?.type, FrameType.Welcome);
    const error = await rawSession(receiver, oneGuest);
    assert(error.includes("busy with another gang"), error);
  } finally {
    first.close();
  }
});

Deno.test("the receiver refuses to overwrite a file that holds a guest's RAM", async () => {
  await using receiver = await startReceiver();
  const path = makeRamFile(shmPath("twice"), [patternPage(1), patternPage(2)]);
  try {
    const migrate = async () => {
      using gang = Gang.open([{ name: "vm", path }], { seed: randomSeed() });
      return await transferGang(gang, await receiver.connect());
    };
    assert((await migrate()).verified);
    const error = await assertRejects(migrate, Error);
    assert(error.message.includes(`"${receiver.dir}/vm" exists and holds data`), error.message);
    assertSameBytes(
      readRamFile(`${receiver.dir}/vm`),
      readRamFile(path),
      "the first copy is intact",
    );
  } finally {
    await removeFiles(path);
  }
});

Deno.test("a peer without the token learns nothing of the limits: one refusal whatever it sends", async (t) => {
  const token = "0123456789abcdef0123";
  await using receiver = await startReceiver({ token, maxGuests: 7 });
  const helloWith = (tokenText: string, guests: Hello["guests"]) =>
    encodeHello({
      version: PROTOCOL_VERSION,
      pageSize: PAGE_SIZE,
      seed: 7n,
      token: tokenText,
      guests,
    });
  const eight = Array.from({ length: 8 }, (_, i) => ({ name: `g${i}`, size: PAGE_SIZE }));
  const longest = (frame: Uint8Array) => {
    new DataView(frame.buffer, frame.byteOffset).setUint32(4, 2 ** 32 - 1, true);
    return frame;
  };
  const header = new Uint8Array(HEADER_BYTES);
  writeHeader(new DataView(header.buffer), 0, FrameType.Hello, 0, 2 ** 32 - 1);
  const badUtf8 = helloWith("x".repeat(20), eight);
  badUtf8.fill(0xff, HEADER_BYTES + 26, HEADER_BYTES + 46);
  const unauthenticated: [string, Uint8Array[]][] = [
    ["a header-only HELLO of the largest length", [header]],
    ["the largest length, with a wrong token", [longest(helloWith("guess".repeat(4), eight))]],
    ["a wrong token and too many guests", [helloWith("guess".repeat(4), eight)]],
    ["a token that is not UTF-8", [badUtf8]],
    ["a HELLO cut short", [helloWith(token, eight).subarray(0, 40)]],
    ["no token at all", [helloWith("", eight)]],
  ];
  for (const [label, chunks] of unauthenticated) {
    await t.step(label, async () => {
      assertEquals(await rawSession(receiver, ...chunks), "Gang refused: wrong or missing token");
    });
  }
  await t.step("another protocol version is told as such: it reveals no setting", async () => {
    const error = await rawSession(receiver, hello([{ name: "vm", size: PAGE_SIZE }], 99));
    assert(error.startsWith("Unsupported protocol version 99"), error);
  });
  const agentHello = (tokenText: string) =>
    encodeJson(FrameType.Control, { id: 0, op: "hello", version: 1, token: tokenText });
  await t.step("an agent's client without the token is refused as any peer", async () => {
    assertEquals(await rawSession(receiver, agentHello("guess".repeat(4))), TOKEN_REFUSAL);
    assertEquals(await rawSession(receiver, agentHello("")), TOKEN_REFUSAL);
  });
  await t.step("an agent's client with the token is told this is no agent", async () => {
    assertEquals(await rawSession(receiver, agentHello(token)), NOT_AN_AGENT);
    const connecting = AgentClient.connect(
      { hostname: "127.0.0.1", port: receiver.port },
      { insecure: true, token },
    );
    await assertRejects(() => connecting, Error, "This is a gangway receive server");
  });
  await t.step("a sender with the token is told the limits", async () => {
    assertEquals(
      await rawSession(receiver, helloWith(token, eight)),
      "Gang refused: 8 guests exceed the limit of 7",
    );
    assertEquals(
      await rawSession(receiver, longest(helloWith(token, eight))),
      "Hello frame of 4294967295 bytes exceeds the limit of 67391",
    );
  });
  const logged = receiver.events.flatMap((e) => e.event === "failed" ? [e.error] : []);
  assert(
    logged.some((e) => e.includes("Connection closed in the middle of a Hello frame")),
    `the log keeps the real reasons: ${logged.join("; ")}`,
  );
  assertEquals([...Deno.readDirSync(receiver.dir)], []);
});

Deno.test("a file that was there is kept, zeroed and of its own mode when a gang fails; created files get 0600", async () => {
  await using receiver = await startReceiver();
  const existing = `${receiver.dir}/vm`;
  Deno.writeFileSync(existing, new Uint8Array(0), { mode: 0o644 });
  Deno.chmodSync(existing, 0o644);
  const error = await rawSession(
    receiver,
    oneGuest,
    pagesFrame(0, patternPage(1)),
    pagesFrame(9, patternPage(2), 1),
  );
  assert(error.includes("points at page 9"), error);
  const after = Deno.statSync(existing);
  assertEquals([after.size, after.mode! & 0o777], [0, 0o644], "kept as it was: empty, mode 0644");

  const path = makeRamFile(shmPath("kept"), [patternPage(3), "hole", patternPage(4)]);
  try {
    for (const name of ["vm", "fresh"]) {
      using gang = Gang.open([{ name, path }], { seed: randomSeed() });
      assert((await transferGang(gang, await receiver.connect())).verified);
      assertSameBytes(readRamFile(`${receiver.dir}/${name}`), readRamFile(path));
    }
    assertEquals(Deno.statSync(existing).mode! & 0o777, 0o644, "the existing file keeps its mode");
    assertEquals(Deno.statSync(`${receiver.dir}/fresh`).mode! & 0o777, 0o600, "a created file");
  } finally {
    await removeFiles(path);
  }
});

Deno.test("a failed gang leaves a waiting file whose size is not a page multiple free of data, so a retry is taken", async () => {
  // On tmpfs, where destination QEMUs keep their RAM files.
  const dir = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "gangway-target-" });
  await using receiver = await startReceiver({ dir });
  const size = 4 * PAGE_SIZE + 100;
  const waiting = `${receiver.dir}/vm`;
  Deno.writeFileSync(waiting, new Uint8Array(0), { mode: 0o600 });
  Deno.truncateSync(waiting, size); // as a destination QEMU leaves it: sized, all holes
  const tail = hello([{ name: "vm", size }]);
  const error = await rawSession(
    receiver,
    tail,
    pagesFrame(4, patternPage(1).fill(0, 100)), // its last 100 bytes, zeros past them
    pagesFrame(9, patternPage(2), 1),
  );
  assert(error.includes("points at page 9"), error);
  const after = Deno.statSync(waiting);
  assertEquals([after.size, after.blocks], [size, 0], "zeroed to the last block");

  const path = makeRamFile(shmPath("tail"), [
    patternPage(5),
    "hole",
    "zero",
    patternPage(6),
    patternPage(7),
  ], size);
  try {
    using gang = Gang.open([{ name: "vm", path }], { seed: randomSeed() });
    assert((await transferGang(gang, await receiver.connect())).verified, "the retry is taken");
    assertSameBytes(readRamFile(waiting), readRamFile(path));
  } finally {
    await removeFiles(path);
    await receiver.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a guest finished alone is verified, no longer a source of references, never touched again, and kept when the gang fails", async () => {
  await using receiver = await startReceiver();
  const twoGuests = hello([{ name: "a", size: 4 * PAGE_SIZE }, { name: "b", size: 4 * PAGE_SIZE }]);
  const content = patternPage(5);
  const hash = hashPages(content, 1, 7n).hashes[0]!;
  const zero = zeroPageHash(7n);
  const digestOfA = guestDigest(BigUint64Array.of(hash, zero, zero, zero), 7n, 4 * PAGE_SIZE);
  const refToB = new Uint8Array(pairsFrameBytes(1));
  writePairsFrame(refToB, FrameType.Refs, 1, Uint32Array.of(0), Uint32Array.of(0));

  const wrongDigest = await rawSession(
    receiver,
    twoGuests,
    pagesFrame(0, content),
    encodeGuestDone(0, "00".repeat(16)),
  );
  assert(wrongDigest.includes(`Digest mismatch for guest "a"`), wrongDigest);

  const refused = await rawSession(
    receiver,
    twoGuests,
    pagesFrame(0, content),
    encodeRoundEnd(1, false),
    encodeGuestDone(0, digestOfA),
    refToB,
  );
  assert(refused.includes("Reference to content 0, which no page of the target holds"), refused);
  assertSameBytes(readRamFile(`${receiver.dir}/a`).subarray(0, PAGE_SIZE), content, "a is kept");
  await assertRejects(() => Deno.stat(`${receiver.dir}/b`), Deno.errors.NotFound);
  await Deno.remove(`${receiver.dir}/a`);

  const touched = await rawSession(
    receiver,
    twoGuests,
    pagesFrame(0, content),
    encodeGuestDone(0, digestOfA),
    pagesFrame(1, patternPage(6), 1),
  );
  assert(touched.includes(`Pages frame for guest "a", which is finished`), touched);
  assertSameBytes(
    readRamFile(`${receiver.dir}/a`).subarray(PAGE_SIZE),
    new Uint8Array(3 * PAGE_SIZE),
  );
});

Deno.test("a page with bytes past the end of a short last page is refused, never verified", async () => {
  await using receiver = await startReceiver();
  const short = PAGE_SIZE + 100; // a last page of 100 bytes: a sender reads zeros past them
  const content = patternPage(8); // no zero byte past the 100th
  const hash = hashPages(content, 1, 7n).hashes[0]!;
  const zero = zeroPageHash(7n);
  const done = (...digests: string[]) => [encodeRoundEnd(1, true), encodeDone(digests)];
  const shortDigest = guestDigest(BigUint64Array.of(zero, hash), 7n, short);
  const refToShort = new Uint8Array(pairsFrameBytes(1));
  writePairsFrame(refToShort, FrameType.Refs, 1, Uint32Array.of(1), Uint32Array.of(0));

  const asPage = await rawSession(
    receiver,
    hello([{ name: "s", size: short }]),
    pagesFrame(1, content),
    ...done(shortDigest),
  );
  const asReference = await rawSession(
    receiver,
    hello([{ name: "w", size: 2 * PAGE_SIZE }, { name: "s", size: short }]),
    pagesFrame(0, content),
    refToShort,
    ...done(guestDigest(BigUint64Array.of(hash, zero), 7n, 2 * PAGE_SIZE), shortDigest),
  );
  for (const refusal of [asPage, asReference]) {
    assert(
      refusal.includes('A page of guest "s" has bytes other than zeros past the end'),
      refusal,
    );
    assert(!refusal.includes(receiver.dir), `the target's path stays at the target: ${refusal}`);
  }
  assertEquals([...Deno.readDirSync(receiver.dir)], [], "the failed gangs' files are removed");
});

Deno.test("a receiver takes at most MAX_GUESTS guests a gang: its journal is read whole at its next start", () => {
  checkReceiverOptions({ dir: "/nowhere", maxGuests: MAX_GUESTS });
  for (const maxGuests of [0, MAX_GUESTS + 1, 1.5, Number.NaN]) {
    assertThrows(
      () => checkReceiverOptions({ dir: "/nowhere", maxGuests }),
      RangeError,
      `maxGuests must be an integer from 1 to ${MAX_GUESTS}`,
    );
  }
  // A limit that would turn itself off, or refuse every gang as the sender's fault; no token.
  for (const name of ["maxGuestBytes", "maxGangBytes", "maxFrameBytes"] as const) {
    for (const limit of [Number.NaN, -1, 0, "5" as unknown as number]) {
      assertThrows(
        () => checkReceiverOptions({ dir: "/nowhere", [name]: limit }),
        RangeError,
        `${name} must be a positive integer, not ${JSON.stringify(limit)}`,
      );
    }
  }
  assertThrows(
    () => checkReceiverOptions({ dir: "/nowhere", token: "" }),
    RangeError,
    "token must be a non-empty string",
  );
});

Deno.test("guest names in any script, with emoji and joiners, are taken; what a terminal acts on is not", () => {
  const taken = [
    "web-01",
    "Сервер 1", // Cyrillic, a space
    "数据库",
    "می‌خواهم", // Persian: a zero-width non-joiner is part of the word
    "👩‍💻dev", // an emoji joined by U+200D
    "🏴\u{e0067}\u{e0062}\u{e0073}\u{e0063}\u{e0074}\u{e007f}", // a flag of tag characters
    "soft\u00adhyphen",
  ];
  for (const name of taken) assertEquals(badGuestName(name), undefined, name);
  // A path is refused as one, dot or not.
  for (const name of ["../evil", "./x", "a/b", "a\\b"]) {
    assertEquals(badGuestName(name), "it contains a slash or a backslash", name);
  }
  const refused = ["vm\u001b[2J", "vm\u0085x", "vm\u202egpj.exe", "vm\u2066x", "a\u2029b"];
  for (const name of refused) {
    assertEquals(
      badGuestName(name),
      "it contains a control, bidirectional-control or line-separator character",
      JSON.stringify(name),
    );
  }
});

Deno.test("receiveGang() with options out of range throws and closes the connection: the sender is not left waiting", async () => {
  const dir = await Deno.makeTempDir({ prefix: "gangway-target-" });
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({
    hostname: "127.0.0.1",
    port: (listener.addr as Deno.NetAddr).port,
  });
  try {
    const accepted = await listener.accept();
    await assertRejects(
      () => receiveGang(accepted, { dir, idleTimeoutMs: -5 }),
      RangeError,
      "idleTimeoutMs must be 1 to",
    );
    assertEquals(await client.read(new Uint8Array(16)), null, "the sender sees it closed");
  } finally {
    client.close();
    await Deno.remove(dir, { recursive: true });
  }
});
