import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { join } from "node:path";
import { QmpClient } from "../src/qemu/qmp.ts";
import { QmpError } from "../src/qemu/qmp_messages.ts";

type Reply = (message: Record<string, unknown>) => string[] | undefined;

/**
 * A fake QEMU: greets, accepts qmp_capabilities, and answers other
 * commands with `reply` (undefined: never answer).
 */
async function fakeQemu(reply: Reply) {
  const dir = await Deno.makeTempDir({ prefix: "gangway-qmp-test-" });
  const path = join(dir, "qmp.sock");
  const listener = Deno.listen({ transport: "unix", path });
  const conns: Deno.Conn[] = [];
  const send = (conn: Deno.Conn, lines: string[]) =>
    conn.write(new TextEncoder().encode(lines.map((l) => l + "\r\n").join("")));
  const serving = (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      await send(conn, [
        JSON.stringify({
          QMP: { version: { qemu: { major: 7, minor: 2, micro: 22 }, package: " Debian " } },
        }),
      ]);
      (async () => {
        let text = "";
        const buf = new Uint8Array(4096);
        while (true) {
          const n = await conn.read(buf).catch(() => null);
          if (n === null) return;
          text += new TextDecoder().decode(buf.subarray(0, n));
          let nl;
          while ((nl = text.indexOf("\n")) >= 0) {
            const message = JSON.parse(text.slice(0, nl));
            text = text.slice(nl + 1);
            const out = message.execute === "qmp_capabilities"
              ? [JSON.stringify({ return: {}, id: message.id })]
              : reply(message);
            if (out) await send(conn, out).catch(() => {});
          }
        }
      })();
    }
  })();
  return {
    path,
    /** Sends raw lines to every client. */
    push: (lines: string[]) => Promise.all(conns.map((c) => send(c, lines))),
    /** Hangs up on every client, as a dying QEMU does. */
    hangUp: () => conns.forEach((c) => c.close()),
    async [Symbol.asyncDispose]() {
      listener.close();
      await serving;
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // already closed
        }
      }
      await Deno.remove(dir, { recursive: true });
    },
  };
}

const event = (name: string, data: unknown = {}) =>
  JSON.stringify({ event: name, data, timestamp: { seconds: 1700000000, microseconds: 500 } });

Deno.test("QmpClient.connect() negotiates and execute() returns the answer", async () => {
  await using qemu = await fakeQemu((
    m,
  ) => [JSON.stringify({ return: { status: "running", running: true }, id: m.id })]);
  await using qmp = await QmpClient.connect(qemu.path, { guest: "vm1" });
  assertEquals(qmp.version, { major: 7, minor: 2, micro: 22, package: "Debian" });
  assertEquals(await qmp.execute("query-status"), { status: "running", running: true });
});

Deno.test("QmpClient.execute() matches concurrent answers by id", async () => {
  const held: Record<string, unknown>[] = [];
  await using qemu = await fakeQemu((m) => {
    held.push(m);
    if (held.length < 2) return undefined;
    // Answer in reverse order.
    return held.reverse().map((h) => JSON.stringify({ return: h.execute, id: h.id }));
  });
  await using qmp = await QmpClient.connect(qemu.path, { guest: "vm1" });
  const [a, b] = await Promise.all([qmp.execute("first"), qmp.execute("second")]);
  assertEquals([a, b], ["first", "second"]);
});

Deno.test("QmpClient.execute() names the guest and the command in QMP errors", async () => {
  await using qemu = await fakeQemu((m) => [
    JSON.stringify({
      error: { class: "GenericError", desc: "There's a migration process in progress" },
      id: m.id,
    }),
  ]);
  await using qmp = await QmpClient.connect(qemu.path, { guest: "vm1" });
  const error = await assertRejects(() => qmp.execute("migrate", { uri: "unix:/x" }), QmpError);
  assertEquals(
    error.message,
    `Cannot run "migrate" on guest "vm1": There's a migration process in progress`,
  );
  assertEquals(error.errorClass, "GenericError");
});

Deno.test("QmpClient.execute() fails pending commands when the socket dies", async () => {
  await using qemu = await fakeQemu(() => undefined);
  await using qmp = await QmpClient.connect(qemu.path, { guest: "vm1" });
  const pending = qmp.execute("query-migrate");
  qemu.hangUp();
  await assertRejects(
    () => pending,
    Error,
    `Cannot run "query-migrate" on guest "vm1": QMP connection closed`,
  );
  await qmp.ended;
  assert(qmp.closed);
  await assertRejects(() => qmp.execute("cont"), Error, `Cannot run "cont" on guest "vm1"`);
});

Deno.test("QmpClient.execute() gives up after its timeout", async () => {
  await using qemu = await fakeQemu(() => undefined);
  await using qmp = await QmpClient.connect(qemu.path, { guest: "vm1" });
  await assertRejects(
    () => qmp.execute("query-status", undefined, { timeoutMs: 50 }),
    Error,
    `Cannot run "query-status" on guest "vm1": no answer in 50 ms`,
  );
});

Deno.test("QmpClient.waitForEvent() resolves on the matching event only", async () => {
  await using qemu = await fakeQemu(() => undefined);
  await using qmp = await QmpClient.connect(qemu.path, { guest: "vm1" });
  const seen: string[] = [];
  const off = qmp.on("*", (e) => seen.push(e.event));
  const completed = qmp.waitForEvent("MIGRATION", (e) => e.data.status === "completed", 2000);
  await qemu.push([
    event("STOP"),
    event("MIGRATION", { status: "active" }),
    event("MIGRATION", { status: "completed" }),
  ]);
  const got = await completed;
  assertEquals(got.data, { status: "completed" });
  assertEquals(got.timestampMs, 1700000000000.5);
  off();
  assertEquals(seen, ["STOP", "MIGRATION", "MIGRATION"]);
  await assertRejects(() => qmp.waitForEvent("RESUME", undefined, 30), Error, "none in 30 ms");
});

Deno.test("QmpClient.events() streams events and ends with the connection", async () => {
  await using qemu = await fakeQemu(() => undefined);
  const qmp = await QmpClient.connect(qemu.path, { guest: "vm1" });
  const names: string[] = [];
  const reading = (async () => {
    for await (const e of qmp.events()) names.push(e.event);
  })();
  await qemu.push([event("STOP"), event("RESUME")]);
  await qmp.waitForEvent("RESUME");
  await qmp.close();
  await qmp.close(); // safe twice
  await reading;
  assertEquals(names, ["STOP", "RESUME"]);
});

Deno.test("QmpClient.connect() names the guest when nothing listens", async () => {
  await assertRejects(
    () => QmpClient.connect("/nonexistent/gangway.qmp", { guest: "vm9" }),
    Error,
    `Cannot connect to QMP of guest "vm9"`,
  );
});

Deno.test("QmpClient.connect() says that QEMU may be busy with another client when it does not greet", async () => {
  // What a second client of a QEMU's QMP socket sees: accepted, then nothing.
  const dir = await Deno.makeTempDir({ prefix: "gangway-qmp-test-" });
  const path = join(dir, "qmp.sock");
  const listener = Deno.listen({ transport: "unix", path });
  const accepted = listener.accept();
  try {
    await assertRejects(
      () => QmpClient.connect(path, { guest: "vm9", timeoutMs: 200 }),
      Error,
      `no greeting in 200 ms (QEMU serves one QMP client at a time: is another one connected to ${path}?)`,
    );
  } finally {
    (await accepted).close();
    listener.close();
    await Deno.remove(dir, { recursive: true });
  }
});
