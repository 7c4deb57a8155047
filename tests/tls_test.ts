import { assert, assertEquals, assertRejects, assertSameBytes } from "./_assert.ts";
import { Gang } from "../src/scan/gang.ts";
import { transferGang } from "../src/transfer/transfer_gang.ts";
import { TargetError } from "../src/transfer/sender.ts";
import { randomSeed } from "../src/transfer/seed.ts";
import { FrameType, PROTOCOL_VERSION } from "../src/transfer/protocol.ts";
import { encodeHello } from "../src/transfer/hello_frame.ts";
import { FrameReader } from "../src/transfer/frame_io.ts";
import { PAGE_SIZE } from "../src/native/ram_file.ts";
import { connectTarget } from "../src/transport/connect_target.ts";
import { listenForSenders } from "../src/transport/listen_for_senders.ts";
import { readPemFile, readTokenFile } from "../src/transport/credentials.ts";
import { runCli, spawnReceiver } from "./_cli.ts";
import { makeRamFile, patternPage, readRamFile, removeFiles, shmPath } from "./_fixtures.ts";
import { startReceiver } from "./_transfer.ts";
import { makeLabCerts } from "./tls_fixtures.ts";
import { waitFor } from "./fault_fixtures.ts";

const SEND = ["--allow-ffi", "--allow-read", "--allow-net", "--allow-env=GANGWAY_LIB"];
const RECEIVE = [...SEND, "--allow-write", "--allow-sys=uid"];
const LOCAL = { hostname: "127.0.0.1" };

function smallGuest(label: string): string {
  return makeRamFile(shmPath(label), [patternPage(1), "hole", patternPage(2), patternPage(1)]);
}

/** Names in a directory. */
function listDir(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
}

Deno.test("deno task certs makes a CA, a receiver certificate with IP addresses, and a private token", async () => {
  const dir = await Deno.makeTempDir({ prefix: "gangway-certs-" });
  try {
    const run = async (args: string[]) =>
      await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-run=openssl",
          "--allow-read",
          "--allow-write",
          new URL("../tools/certs.ts", import.meta.url).href,
          ...args,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
    const made = await run([`${dir}/lab`, "--ip", "10.250.0.2", "--ip", "127.0.0.1"]);
    assertEquals(made.code, 0, new TextDecoder().decode(made.stderr));
    const madeSaid = new TextDecoder().decode(made.stdout);
    assert(madeSaid.includes("receiver.pem is valid for 10.250.0.2, 127.0.0.1"), madeSaid);
    // A path with a space, in the lines to paste, is quoted for a shell.
    const spaced = await run([`${dir}/a b`]);
    assertEquals(spaced.code, 0, new TextDecoder().decode(spaced.stderr));
    const pasted = new TextDecoder().decode(spaced.stdout);
    assert(pasted.includes(`--ca '${dir}/a b/ca.pem'`), pasted);
    assert(pasted.includes("127.0.0.1 and localhost only (give --ip or --dns)"), pasted);
    assertEquals(listDir(`${dir}/lab`), [
      "ca.key",
      "ca.pem",
      "receiver.key",
      "receiver.pem",
      "token",
    ]);
    for (const secret of ["ca.key", "receiver.key", "token"]) {
      assertEquals((await Deno.stat(`${dir}/lab/${secret}`)).mode! & 0o777, 0o600, secret);
    }
    assertEquals((await readTokenFile(`${dir}/lab/token`)).length, 64);
    const text = await new Deno.Command("openssl", {
      args: ["x509", "-noout", "-text", "-in", `${dir}/lab/receiver.pem`],
      stdout: "piped",
    }).output();
    const description = new TextDecoder().decode(text.stdout);
    assert(description.includes("IP Address:10.250.0.2, IP Address:127.0.0.1"), description);
    const verify = await new Deno.Command("openssl", {
      args: ["verify", "-CAfile", `${dir}/lab/ca.pem`, `${dir}/lab/receiver.pem`],
      stdout: "null",
      stderr: "null",
    }).output();
    assert(verify.success, "the receiver certificate is signed by the CA");
    const again = await run([`${dir}/lab`]);
    assertEquals(again.code, 1);
    assert(new TextDecoder().decode(again.stderr).includes("exists already"));
    // The next host's certificate with the CA's key kept off the hosts: refused before anything
    // is written, so that once the key is back the same command works.
    await Deno.rename(`${dir}/lab/ca.key`, `${dir}/ca.key.off`);
    const keyless = await run([`${dir}/lab`, "--name", "host3"]);
    assertEquals(keyless.code, 1);
    const said = new TextDecoder().decode(keyless.stderr);
    assert(said.includes(`its key "${dir}/lab/ca.key" is not: put the CA's key back`), said);
    assertEquals(listDir(`${dir}/lab`), ["ca.pem", "receiver.key", "receiver.pem", "token"]);
    await Deno.rename(`${dir}/ca.key.off`, `${dir}/lab/ca.key`);
    const host3 = await run([`${dir}/lab`, "--name", "host3"]);
    assertEquals(host3.code, 0, new TextDecoder().decode(host3.stderr));
    // Deno asks for --allow-all under /dev, which a task cannot be given: the error says what works.
    const shm = `/dev/shm/gangway-certs-${crypto.randomUUID()}`;
    const refused = await run([shm]);
    assertEquals(refused.code, 1);
    const why = new TextDecoder().decode(refused.stderr);
    assert(why.includes(`Cannot make certificates in "${shm}"`), why);
    assert(why.includes("make them in a directory outside /dev and copy them"), why);
    await assertRejects(() => Deno.stat(shm), Deno.errors.NotFound); // nothing made
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("send and receive migrate over TLS with a token, byte for byte", async () => {
  await using certs = await makeLabCerts();
  const path = smallGuest("tls");
  const dir = await Deno.makeTempDir({ prefix: "gangway-target-" });
  try {
    await using receiver = await spawnReceiver(dir, [...certs.receiverArgs, "--once"]);
    const { code, stdout, stderr } = await runCli(
      "send",
      [...certs.senderArgs(receiver.port), "--json", path],
      { permissions: SEND },
    );
    assertEquals(code, 0, stderr);
    assertEquals(JSON.parse(stdout).verified, true);
    assert(!stderr.includes("warning"), stderr);
    assertEquals((await receiver.exited()).code, 0);
    assertSameBytes(readRamFile(`${dir}/${path.split("/").at(-1)}`), readRamFile(path));
  } finally {
    await removeFiles(path);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("send and receive read their certificates and token in /dev/shm with their tasks' permissions", async () => {
  // Deno asks for --allow-all to read anything under /dev (denoland/deno#30979); the tasks run
  // without it, and a user may keep these files beside the RAM files.
  await using certs = await makeLabCerts();
  const shm = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "gangway-certs-" });
  const path = smallGuest("tls-shm");
  const dir = await Deno.makeTempDir({ prefix: "gangway-target-" });
  try {
    for (const name of ["ca.pem", "receiver.pem", "receiver.key", "token"]) {
      await Deno.copyFile(`${certs.dir}/${name}`, `${shm}/${name}`);
      await Deno.chmod(`${shm}/${name}`, 0o600);
    }
    const token = ["--token-file", `${shm}/token`];
    await using receiver = await spawnReceiver(dir, [
      ...["--cert", `${shm}/receiver.pem`, "--key", `${shm}/receiver.key`, ...token, "--once"],
    ]);
    const target = ["--target", `127.0.0.1:${receiver.port}`];
    const sent = await runCli("send", [...target, "--ca", `${shm}/ca.pem`, ...token, path], {
      permissions: SEND,
    });
    assertEquals(sent.code, 0, sent.stderr);
    assertEquals((await receiver.exited()).code, 0);
    assertSameBytes(readRamFile(`${dir}/${path.split("/").at(-1)}`), readRamFile(path));

    // Read by the C library there, and refused in the same words.
    await Deno.chmod(`${shm}/token`, 0o640);
    assert((await new Deno.Command("mkfifo", { args: [`${shm}/fifo`] }).output()).success);
    await Deno.writeFile(`${shm}/huge`, new Uint8Array(0), { mode: 0o600 });
    await Deno.truncate(`${shm}/huge`, 2 ** 30); // a RAM file named by mistake: never read whole
    const hugeOutside = `${dir}.huge-token`; // outside /dev: Deno reads it, to the same bound
    await Deno.writeFile(hugeOutside, new Uint8Array(0), { mode: 0o600 });
    await Deno.truncate(hugeOutside, 2 ** 30);
    const refusals: [string[], string][] = [
      [["--token-file", `${shm}/huge`], `"${shm}/huge": ${2 ** 30} bytes, more than a file`],
      [["--token-file", hugeOutside], `"${hugeOutside}": ${2 ** 30} bytes, more than a file`],
      [token, `Cannot use the token file "${shm}/token": other users may read it (mode 0640`],
      [["--token-file", `${shm}/fifo`], `"${shm}/fifo": not a regular file`],
      [["--token-file", shm], `"${shm}": is a directory`],
      [["--token-file", `${shm}/none`], `"${shm}/none": no such file`],
    ];
    for (const [args, message] of refusals) {
      const refused = await runCli(
        "send",
        ["--target", "127.0.0.1:9", "--ca", `${shm}/ca.pem`, ...args, path],
        { permissions: SEND },
      );
      assertEquals(refused.code, 1, refused.stderr);
      assert(refused.stderr.includes(message), refused.stderr);
    }
  } finally {
    await removeFiles(path);
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(`${dir}.huge-token`).catch(() => {});
    await Deno.remove(shm, { recursive: true });
  }
});

Deno.test("receive and send refuse to start without TLS files or --insecure, and say what to pass", async (t) => {
  await using certs = await makeLabCerts();
  const dir = await Deno.makeTempDir({ prefix: "gangway-target-" });
  const openToken = `${certs.dir}/open-token`;
  const shortToken = `${certs.dir}/short-token`;
  await Deno.writeTextFile(openToken, "0123456789abcdef0123\n", { mode: 0o644 });
  await Deno.chmod(openToken, 0o644);
  await Deno.writeTextFile(shortToken, "secret\n", { mode: 0o600 });
  const groupToken = `${certs.dir}/group-token`;
  await Deno.writeTextFile(groupToken, "0123456789abcdef0123\n", { mode: 0o640 });
  await Deno.chmod(groupToken, 0o640);
  const fifo = `${certs.dir}/fifo`;
  assert((await new Deno.Command("mkfifo", { args: [fifo] }).output()).success);
  const openKey = `${certs.dir}/open.key`;
  await Deno.copyFile(certs.keyFile, openKey);
  await Deno.chmod(openKey, 0o644);
  const listen = ["--listen", "127.0.0.1:0", "--dir", dir];
  const tls = ["--cert", certs.certFile, "--key", certs.keyFile];
  const cases: [string, "receive" | "send", string[], number, string][] = [
    ["receive with neither", "receive", listen, 2, "receive needs --cert FILE --key FILE"],
    [
      "receive with a certificate but no key",
      "receive",
      [...listen, "--cert", certs.certFile],
      2,
      "TLS needs both --cert FILE and --key FILE",
    ],
    [
      "receive with TLS but no token",
      "receive",
      [...listen, ...tls],
      2,
      "--token-file FILE is required with TLS",
    ],
    [
      "receive with TLS and --insecure",
      "receive",
      [...listen, ...tls, "--insecure"],
      2,
      "cannot be combined",
    ],
    [
      "receive with a token every user can read",
      "receive",
      [...listen, ...tls, "--token-file", openToken],
      1,
      "other users may read it (mode 0644",
    ],
    [
      "receive with a private key every user can read",
      "receive",
      [...listen, "--cert", certs.certFile, "--key", openKey, "--token-file", certs.tokenFile],
      1,
      `Cannot read the private key file "${openKey}": other users may read it (mode 0644`,
    ],
    [
      "receive with a token its group can read",
      "receive",
      [...listen, ...tls, "--token-file", groupToken],
      1,
      "other users may read it (mode 0640",
    ],
    [
      "send with a FIFO as the token file",
      "send",
      ["--target", "127.0.0.1:9", "--ca", certs.caFile, "--token-file", fifo, shmPath("x")],
      1,
      `Cannot use the token file "${fifo}": not a regular file`,
    ],
    [
      "send with a FIFO as the CA",
      "send",
      ["--target", "127.0.0.1:9", "--ca", fifo, "--token-file", certs.tokenFile, shmPath("x")],
      1,
      `Cannot read the CA certificate file "${fifo}": not a regular file`,
    ],
    [
      "receive with a short token",
      "receive",
      [...listen, ...tls, "--token-file", shortToken],
      1,
      "at least 16 are needed",
    ],
    [
      "receive with a missing certificate",
      "receive",
      [
        ...listen,
        "--cert",
        `${dir}/nope.pem`,
        "--key",
        certs.keyFile,
        "--token-file",
        certs.tokenFile,
      ],
      1,
      `Cannot read the certificate file "${dir}/nope.pem": no such file`,
    ],
    [
      "receive with a key of another certificate",
      "receive",
      [
        ...listen,
        "--cert",
        certs.certFile,
        "--key",
        certs.caFile.replace("ca.pem", "other/receiver.key"),
        "--token-file",
        certs.tokenFile,
      ],
      1,
      "the private key does not belong to the certificate",
    ],
    [
      "receive with the key as --cert and the certificate as --key",
      "receive",
      [
        ...listen,
        "--cert",
        certs.keyFile,
        "--key",
        certs.certFile,
        "--token-file",
        certs.tokenFile,
      ],
      1,
      `Cannot read the certificate file "${certs.keyFile}": it holds no certificate (it looks like a private key)`,
    ],
    [
      "receive with the certificate as --key",
      "receive",
      [...listen, ...tls.slice(0, 2), "--key", certs.certFile, "--token-file", certs.tokenFile],
      1,
      `Cannot read the private key file "${certs.certFile}": it holds no private key (it looks like a certificate)`,
    ],
    [
      "send with a private key as --ca",
      "send",
      [
        "--target",
        "127.0.0.1:9",
        "--ca",
        certs.keyFile,
        "--token-file",
        certs.tokenFile,
        shmPath("x"),
      ],
      1,
      `Cannot read the CA certificate file "${certs.keyFile}": it holds no certificate (it looks like a private key)`,
    ],
    [
      "send with neither",
      "send",
      ["--target", "127.0.0.1:9", shmPath("x")],
      2,
      "--ca FILE is required",
    ],
    [
      "send with a CA but no token",
      "send",
      ["--target", "127.0.0.1:9", "--ca", certs.caFile, shmPath("x")],
      2,
      "--token-file FILE is required with TLS",
    ],
    [
      "send with a CA and --insecure",
      "send",
      ["--target", "127.0.0.1:9", "--ca", certs.caFile, "--insecure", shmPath("x")],
      2,
      "cannot be combined",
    ],
  ];
  try {
    for (const [label, command, args, exitCode, message] of cases) {
      await t.step(label, async () => {
        const { code, stdout, stderr } = await runCli(command, args, { permissions: RECEIVE });
        assertEquals(code, exitCode, stderr);
        assertEquals(stdout, "");
        assert(stderr.includes(message), stderr);
      });
    }
    assertEquals(listDir(dir), [], "nothing was written to the target directory");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a token or PEM file's name is printed escaped in its errors: a name cannot recolour a terminal or add a line", async () => {
  const dir = await Deno.makeTempDir({ prefix: "gangway-names-" });
  try {
    const name = `${dir}/tok\x1b[31men\nFAKE LINE\u202e`;
    await Deno.writeTextFile(name, "x".repeat(64), { mode: 0o644 });
    const escaped = `${dir}/tok\\x1b[31men\\x0aFAKE LINE\\u202e`;
    await assertRejects(() => readTokenFile(name), Error, `Cannot use the token file "${escaped}"`);
    await assertRejects(() => readTokenFile(name), Error, `chmod 600 "${escaped}"`);
    await assertRejects(
      () => readPemFile(name, "CA certificate"),
      Error,
      `file "${escaped}": it is not in PEM`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--insecure prints a warning on both sides", async () => {
  const path = smallGuest("insecure");
  const dir = await Deno.makeTempDir({ prefix: "gangway-target-" });
  try {
    // A receiver that warns, then fails on a directory others may write (so it exits at once).
    await Deno.mkdir(`${dir}/open`);
    await Deno.chmod(`${dir}/open`, 0o777);
    const receive = await runCli("receive", [
      "--listen",
      "127.0.0.1:0",
      "--dir",
      `${dir}/open`,
      "--insecure",
    ], { permissions: RECEIVE });
    assertEquals(receive.code, 1);
    assert(
      receive.stderr.startsWith("warning: --insecure: guest RAM arrives unencrypted"),
      receive.stderr,
    );
    await using receiver = await spawnReceiver(dir, ["--insecure", "--once"]);
    const send = await runCli("send", [
      "--target",
      `127.0.0.1:${receiver.port}`,
      "--insecure",
      path,
    ], { permissions: SEND });
    assertEquals(send.code, 0, send.stderr);
    assert(
      send.stderr.startsWith(
        "warning: --insecure: guest RAM and the token cross the network unencrypted",
      ),
      send.stderr,
    );
  } finally {
    await removeFiles(path);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a sender that trusts another CA, or expects another address, is refused before it sends a byte of RAM", async (t) => {
  await using certs = await makeLabCerts();
  await using receiver = await startReceiver({ tls: certs, token: certs.token });
  const target = { ...LOCAL, port: receiver.port };
  await t.step("another CA", async () => {
    await assertRejects(
      () => connectTarget(target, { ca: certs.otherCa }),
      Error,
      `Cannot connect to the target 127.0.0.1:${receiver.port}: its certificate is not signed by the given CA`,
    );
  });
  await t.step("another address", async () => {
    await assertRejects(
      () => connectTarget(target, { ca: certs.ca, serverName: "10.250.0.2" }),
      Error,
      'its certificate is not valid for "10.250.0.2"',
    );
  });
  await t.step("the right CA and name", async () => {
    const conn = await connectTarget(target, { ca: certs.ca, serverName: "localhost" });
    conn.close();
  });
  await waitFor(
    () => receiver.events.filter((e) => e.event === "failed").length >= 3,
    "the receiver's account of the third connection",
  );
  await receiver.stop();
  const failures = receiver.events.filter((e) => e.event === "failed").map((e) => e.error);
  assertEquals(failures.length, 3, failures.join("\n"));
  assert(
    failures.every((e) => e.startsWith("TLS handshake with the sender failed")) ||
      failures[2]!.includes("Connection closed before the handshake"),
    failures.join("\n"),
  );
  assert(!receiver.events.some((e) => e.event === "accepted"));
});

Deno.test("a wrong token is refused before any other frame is read or any file is opened", async (t) => {
  await using certs = await makeLabCerts();
  await using receiver = await startReceiver({ tls: certs, token: certs.token });
  const target = { ...LOCAL, port: receiver.port };
  const path = smallGuest("token");
  try {
    await t.step("a sender with the wrong token", async () => {
      using gang = Gang.open([{ name: "vm", path }], { seed: randomSeed() });
      await assertRejects(
        async () =>
          await transferGang(gang, await connectTarget(target, { ca: certs.ca }), {
            token: "0".repeat(64),
          }),
        TargetError,
        "Target refused: Gang refused: wrong or missing token",
      );
    });
    await t.step("a peer that sends pages right after a HELLO without the token", async () => {
      const conn = await connectTarget(target, { ca: certs.ca });
      try {
        const hello = encodeHello({
          version: PROTOCOL_VERSION,
          pageSize: PAGE_SIZE,
          seed: 1n,
          token: "",
          guests: [{ name: "vm", size: PAGE_SIZE }],
        });
        const pages = new Uint8Array(8 + 4 + 16 + PAGE_SIZE);
        new DataView(pages.buffer).setUint8(0, FrameType.Pages);
        new DataView(pages.buffer).setUint32(4, 4 + 16 + PAGE_SIZE, true);
        await conn.write(new Uint8Array([...hello, ...pages]));
        const frame = await new FrameReader(conn).next(10_000);
        assertEquals(frame?.type, FrameType.Error);
        assertEquals(new TextDecoder().decode(frame!.body), "Gang refused: wrong or missing token");
      } finally {
        conn.close();
      }
    });
    assertEquals(listDir(receiver.dir), [], "no file was opened");
    assert(!receiver.events.some((e) => e.event === "accepted"));
    await t.step("then the right token", async () => {
      using gang = Gang.open([{ name: "vm", path }], { seed: randomSeed() });
      const report = await transferGang(gang, await connectTarget(target, { ca: certs.ca }), {
        token: certs.token,
      });
      assert(report.verified);
      assertSameBytes(readRamFile(`${receiver.dir}/vm`), readRamFile(path));
    });
  } finally {
    await removeFiles(path);
  }
});

Deno.test("a plaintext peer and a TLS peer each learn that the other side speaks the other transport", async (t) => {
  await using certs = await makeLabCerts();
  const path = smallGuest("mixed");
  try {
    await t.step("plaintext sender, TLS receiver", async () => {
      await using receiver = await startReceiver({ tls: certs, token: certs.token });
      using gang = Gang.open([{ name: "vm", path }], { seed: randomSeed() });
      await assertRejects(
        async () =>
          await transferGang(
            gang,
            await connectTarget({ ...LOCAL, port: receiver.port }, { insecure: true }),
            { token: certs.token },
          ),
        TargetError,
        "The peer speaks TLS, not plain gangway",
      );
      assertEquals(listDir(receiver.dir), []);
      await receiver.stop();
      const failed = receiver.events.find((e) => e.event === "failed");
      assert(
        failed?.event === "failed" && failed.error.includes("a sender without TLS?"),
        JSON.stringify(receiver.events),
      );
    });
    await t.step("TLS sender, plaintext receiver", async () => {
      await using receiver = await startReceiver();
      await assertRejects(
        () => connectTarget({ ...LOCAL, port: receiver.port }, { ca: certs.ca }),
        Error,
        "it does not speak TLS (is it running with --insecure?)",
      );
      await receiver.stop();
      const failed = receiver.events.find((e) => e.event === "failed");
      assert(
        failed?.event === "failed" && failed.error.includes("The peer speaks TLS"),
        JSON.stringify(receiver.events),
      );
    });
  } finally {
    await removeFiles(path);
  }
});

Deno.test("a TLS peer that never shakes hands blocks no sender and is given up after the handshake timeout", async () => {
  await using certs = await makeLabCerts();
  await using receiver = await startReceiver({
    tls: certs,
    token: certs.token,
    handshakeTimeoutMs: 1000,
  });
  const path = smallGuest("silent");
  const silent = await Deno.connect({ ...LOCAL, port: receiver.port });
  try {
    const migrate = async () => {
      using gang = Gang.open([{ name: "vm", path }], { seed: randomSeed() });
      const conn = await connectTarget({ ...LOCAL, port: receiver.port }, { ca: certs.ca });
      return await transferGang(gang, conn, { token: certs.token });
    };
    assert((await migrate()).verified, "a sender went through while the silent peer waited");
    await removeFiles(`${receiver.dir}/vm`); // the receiver never overwrites a guest's RAM
    await waitFor(() => receiver.events.some((e) => e.event === "failed"), "the give-up");
    const failed = receiver.events.find((e) => e.event === "failed");
    assertEquals(failed?.event === "failed" && failed.error, "No handshake within 1 s");
    assert((await migrate()).verified, "and another one after it was given up");
    // Deno keeps the socket of an unfinished TLS handshake open until the peer
    // leaves (see docs/security.md), so the silent peer is not told.
  } finally {
    silent.close();
    await removeFiles(path);
  }
});

Deno.test("listenForSenders() and connectTarget() refuse a half-made transport choice", async () => {
  await using certs = await makeLabCerts();
  const address = { ...LOCAL, port: 0 };
  for (
    const [options, message] of [
      [{}, "no certificate and key given for TLS, and plain TCP was not asked for"],
      [{ cert: certs.cert }, "TLS needs both a certificate and its private key"],
      [{ cert: certs.cert, key: certs.key, insecure: true }, "exclude each other"],
    ] as const
  ) {
    let error: unknown;
    try {
      listenForSenders(address, options).close();
    } catch (e) {
      error = e;
    }
    assert(error instanceof Error && error.message.includes(message), String(error));
  }
  await assertRejects(
    () => connectTarget({ ...LOCAL, port: 9 }, {}),
    Error,
    "no CA certificate given for TLS",
  );
});
