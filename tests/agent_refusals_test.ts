/**
 * What the target agent says, and to whom, when it refuses (red-team
 * findings s20-1, 6, 11, 12, 18, 19): its operator sees every refused
 * `prepare` in the log, a peer without the token learns nothing of its
 * limits, and a stop is logged as one. Destinations are started but never
 * booted.
 */
import { basename, join } from "node:path";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { AgentProcess } from "../src/target/agent_process.ts";
import { AgentError } from "../src/target/agent_protocol.ts";
import { describeMachine } from "../src/target/describe_machine.ts";
import { findQemus } from "../src/qemu/discover.ts";
import { QemuProcess } from "../src/qemu/_qemu_process.ts";
import { FrameReader } from "../src/transfer/frame_io.ts";
import { FrameType } from "../src/transfer/protocol.ts";
import { TOKEN_REFUSAL } from "../src/transfer/sender_handshake.ts";
import { testImage, uniqueName } from "./qemu_helpers.ts";
import { eventOf, sourceLike } from "./_agent_fixtures.ts";

/** A scratch directory with an `--images` directory holding the test kernel and initrd. */
async function scratch(): Promise<AsyncDisposable & { root: string; images: string }> {
  const root = await Deno.makeTempDir({ prefix: "gangway-refusals-" });
  const images = join(root, "images");
  await Deno.mkdir(images);
  const image = await testImage();
  await Deno.symlink(image.kernel, join(images, basename(image.kernel)));
  await Deno.symlink(image.initrd, join(images, basename(image.initrd)));
  return { root, images, [Symbol.asyncDispose]: () => Deno.remove(root, { recursive: true }) };
}

Deno.test("the agent logs each refused prepare with its peer and why, names an unknown request, and starts a shared disk at its real path", async () => {
  await using t = await scratch();
  const shared = join(t.root, "shared");
  await Deno.mkdir(shared);
  await Deno.writeTextFile(join(t.root, "secret"), "host file");
  // A link in the shared directory to a file out of it.
  await Deno.symlink(join(t.root, "secret"), join(shared, "out.raw"));
  await using agent = await AgentProcess.start({
    insecure: true,
    imagesDir: t.images,
    sharedDisks: [shared],
  });
  await using target = await agent.connect();
  const description = await describeMachine("vm1", (await sourceLike("vm1")).machine);
  const refused = [
    [{ ...description, name: "../etc" }, 'field "name"'],
    [
      { ...description, disks: [{ path: join(shared, "out.raw"), format: "raw" }] },
      "disks[0].path",
    ],
  ] as const;
  for (const [guest, field] of refused) {
    const error = await assertRejects(
      () => target.agent.request("prepare", { guests: [guest] }),
      AgentError,
    );
    assert(error.message.includes(field), error.message);
    const logged = await eventOf(
      agent,
      (e) => e.event === "prepare-refused" && String(e.error).includes(field),
    );
    assert(logged, `the refusal for ${field} is not logged`);
    assertEquals(logged.connection, "control");
    assert(
      typeof logged.peer === "string" && logged.peer.startsWith("127.0.0.1:"),
      String(logged.peer),
    );
  }
  await assertRejects(
    () => target.agent.request("nosuchop"),
    AgentError,
    'Unknown request "nosuchop"',
  );
  // A disk in the shared directory, named through a link to it: its QEMU opens the real path.
  const disk = join(shared, "vm.raw");
  await Deno.writeFile(disk, new Uint8Array(2 ** 20));
  const via = join(t.root, "via");
  await Deno.symlink(shared, via);
  const name = uniqueName("rf-disk");
  const guest = await describeMachine(name, (await sourceLike(name)).machine);
  const disks = [{ path: join(via, "vm.raw"), format: "raw" }];
  assertEquals((await target.agent.request("prepare", { guests: [{ ...guest, disks }] })).ok, true);
  const { usable } = await findQemus();
  const qemu = usable.find((q) => q.commandLine.instance.ramPath === join(agent.dir, name));
  assertEquals(qemu?.commandLine.machine.disks, [{ path: disk, format: "raw" }]);
});

Deno.test("a QEMU that cannot start is refused with its log's last line, and the refusal logged", async () => {
  await using t = await scratch();
  const qemu = join(t.root, "qemu");
  await Deno.writeTextFile(
    qemu,
    "#!/bin/sh\necho starting\necho 'qemu: cannot start here' >&2\nexit 1\n",
  );
  await Deno.chmod(qemu, 0o755);
  await using agent = await AgentProcess.start({
    insecure: true,
    imagesDir: t.images,
    args: ["--qemu-binary", qemu],
  });
  await using target = await agent.connect();
  const name = uniqueName("rf-qemu");
  const description = await describeMachine(name, (await sourceLike(name)).machine);
  const error = await assertRejects(
    () => target.agent.request("prepare", { guests: [description] }),
    AgentError,
  );
  assert(
    error.message.endsWith(`Cannot start guest "${name}": QEMU exited: qemu: cannot start here`),
    error.message,
  );
  assert(!error.message.includes("starting"), "only the log's last line is quoted");
  assert(await eventOf(agent, (e) => e.event === "prepare-refused"), "the refusal is not logged");
});

Deno.test("a QEMU program that is not there is logged as such, not under its log's path", async () => {
  await using t = await scratch();
  const log = join(t.root, "vm1.qemu.log");
  const process = QemuProcess.spawn("vm1", ["/nonexistent/qemu"], log);
  assertEquals((await process.status).code, 127);
  // dash says "sh: 1: exec: ...", bash "sh: line 1: exec: ...".
  const said = (await process.logTail()).trim();
  assert(said.startsWith("sh: ") && said.endsWith("/nonexistent/qemu: not found"), said);
});

Deno.test("a prepared destination's RAM file is the agent's alone (mode 0600)", async () => {
  await using t = await scratch();
  await using agent = await AgentProcess.start({ insecure: true, imagesDir: t.images });
  await using target = await agent.connect();
  const name = uniqueName("rf-mode");
  await target.prepareDestinations([await sourceLike(name)]);
  assertEquals((await Deno.stat(join(agent.dir, name))).mode! & 0o777, 0o600);
});

Deno.test("a peer without the token that sends a frame over the limit is told only that it lacks the token", async () => {
  await using agent = await AgentProcess.start();
  const conn = await Deno.connectTls({
    hostname: agent.address.hostname,
    port: agent.address.port,
    caCerts: [agent.credentials!.ca],
  });
  try {
    // Type 209, 2207858436 bytes: what the red team sent.
    await conn.write(new Uint8Array([209, 0, 0, 0, 0x04, 0x99, 0x99, 0x83]));
    const frame = await new FrameReader(conn).next(20_000);
    assertEquals(frame?.type, FrameType.Error);
    assertEquals(new TextDecoder().decode(frame!.body), TOKEN_REFUSAL);
  } finally {
    conn.close();
  }
  const failed = await eventOf(agent, (e) => e.event === "failed");
  assert(String(failed?.error).includes("exceeds the limit"), "the agent's log has the detail");
});

Deno.test("an agent stopped while a source is connected logs its stop, not a failure", async () => {
  const agent = await AgentProcess.start({ insecure: true });
  await using target = await agent.connect();
  assertEquals((await target.agent.request("ping")).ok, true);
  await agent.stop();
  const events = agent.server.events.map((e) => e.event);
  assert(events.includes("stopping"), events.join(", "));
  const closed = agent.server.events.find((e) => e.event === "closed");
  assertEquals(closed?.connection, "control");
  assertEquals(closed?.why, "the agent stops");
  assertEquals(agent.server.events.filter((e) => e.event === "failed"), []);
});
