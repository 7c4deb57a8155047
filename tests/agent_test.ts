/**
 * The target agent as a source meets it, on this machine: its token, its
 * allow-list, one gang at a time, files sent once, and the clean-up when
 * its source goes away. Its destinations are started but never booted.
 */
import { join } from "node:path";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { AgentProcess } from "../src/target/agent_process.ts";
import { RemoteTarget } from "../src/target/remote_target.ts";
import { AgentError } from "../src/target/agent_protocol.ts";
import { NotLoadedError } from "../src/qemu/destination.ts";
import { describeMachine } from "../src/target/describe_machine.ts";
import { fileExists, uniqueName } from "./qemu_helpers.ts";
import { eventOf, qemusIn, sourceLike } from "./_agent_fixtures.ts";

Deno.test("the agent refuses a wrong token before it starts anything", async () => {
  await using agent = await AgentProcess.start();
  const error = await assertRejects(() =>
    RemoteTarget.connect(agent.address, {
      ca: agent.credentials!.ca,
      token: "0123456789abcdef-not-the-token",
    })
  );
  assert(error.message.includes("wrong or missing token"), error.message);
  await assertRejects(
    () => RemoteTarget.connect(agent.address, { insecure: true }),
    Error,
    "Cannot use the target agent",
  );
  assertEquals(agent.server.events.filter((e) => e.event === "prepared"), []);
  assertEquals(await qemusIn(agent.dir), []);
  // It said at start what it takes: a source refused for its size can see why.
  const listening = agent.server.events.find((e) => e.event === "listening");
  assertEquals(listening?.dir, agent.dir);
  assertEquals(listening?.maxGuests, 64);
  assertEquals(listening?.maxMemory, `${Math.floor(Deno.systemMemoryInfo().total / 2 ** 20)} MiB`);
  assertEquals(listening?.token, "required");
});

Deno.test("the agent refuses a machine description outside its allow-list, naming the field, and starts nothing", async () => {
  await using agent = await AgentProcess.start();
  await using target = await agent.connect();
  const description = await describeMachine("vm1", (await sourceLike("vm1")).machine);
  const refused = [
    [{ ...description, extraArgs: ["-chardev", "file,id=c,path=/etc/x"] }, 'field "extraArgs"'],
    [{ ...description, name: "../etc" }, 'field "name"'],
    [{ ...description, memoryMiB: 10 ** 9 }, "MiB of RAM are over this agent's limit"],
  ] as const;
  for (const [guest, field] of refused) {
    const error = await assertRejects(
      () => target.agent.request("prepare", { guests: [guest] }),
      AgentError,
    );
    assert(error.message.includes(field), error.message);
  }
  assertEquals(agent.server.events.filter((e) => e.event === "prepared"), []);
  assertEquals(await qemusIn(agent.dir), []);
});

Deno.test("the agent serves one gang at a time, takes a file once, and cleans up when the source goes", async () => {
  await using agent = await AgentProcess.start();
  const source = await sourceLike(uniqueName("ag"));
  const ramPath = join(agent.dir, source.name);

  const first = await agent.connect();
  const [destination] = await first.prepareDestinations([source]);
  assertEquals((await destination!.state()).status, "inmigrate");
  assert(await fileExists(ramPath), "the destination's RAM file is in the agent's directory");
  const sent = agent.server.events.filter((e) => e.event === "file");
  assertEquals(sent.length, 2, "the kernel and the initrd were sent: the agent had neither");

  await assertRejects(() => agent.connect(), Error, "busy with another gang");

  // The source goes away in the middle of its gang: the agent removes what it started.
  await first.close();
  // Asked to run after that, a destination was surely never asked: its source may run again.
  await assertRejects(
    () => destination!.runWhenLoaded(1000),
    NotLoadedError,
    "the agent was not asked to run it",
  );
  assert(await eventOf(agent, (e) => e.event === "abandoned"), "the gang is abandoned");
  assertEquals(await qemusIn(agent.dir), []);
  assert(!(await fileExists(ramPath)), "the RAM file is removed");

  // And serves the next gang, from the files it kept.
  await using next = await agent.connect();
  const again = await next.prepareDestinations([source]);
  assertEquals(agent.server.events.filter((e) => e.event === "file").length, 2);
  await next.discard(again);
  await next.release();
  assertEquals(await qemusIn(agent.dir), []);
  assert(!(await fileExists(ramPath)), "a discarded destination leaves no RAM file");
});

Deno.test("a gang larger than the agent's handshake slots for one address keeps every device-state connection", async () => {
  await using agent = await AgentProcess.start();
  await using target = await agent.connect();
  // More guests than the 8 handshakes one address may have pending at once.
  const sources = await Promise.all(
    Array.from({ length: 12 }, (_, i) => sourceLike(uniqueName(`many${i}`))),
  );
  const destinations = await target.prepareDestinations(sources);
  const carried = () => agent.server.events.filter((e) => e.event === "device-state").length;
  await eventOf(agent, () => carried() === sources.length, 30_000);
  assertEquals(carried(), sources.length, "every device-state connection reached its destination");
  assertEquals(agent.server.events.filter((e) => e.event === "failed"), []);
  await target.discard(destinations);
});

Deno.test("the agent never starts a destination over a RAM file that exists", async () => {
  await using agent = await AgentProcess.start();
  await using target = await agent.connect();
  const name = uniqueName("taken");
  const ramPath = join(agent.dir, name);
  const bytes = new TextEncoder().encode("a guest's RAM, not to be touched");
  await Deno.writeFile(ramPath, bytes);
  try {
    await assertRejects(
      async () => target.prepareDestinations([await sourceLike(name)]),
      AgentError,
      "holds a RAM file of that name",
    );
    assertEquals(await Deno.readFile(ramPath), bytes, "the file is as it was");
    assertEquals(await qemusIn(agent.dir), []);
  } finally {
    await Deno.remove(ramPath);
  }
});

Deno.test("a link that names nothing takes a guest's name too: the agent never writes through it", async () => {
  await using agent = await AgentProcess.start();
  await using target = await agent.connect();
  const name = uniqueName("linked");
  const ramPath = join(agent.dir, name);
  const elsewhere = join(agent.dir, `${name}-not-here`);
  await Deno.symlink(elsewhere, ramPath);
  try {
    await assertRejects(
      async () => target.prepareDestinations([await sourceLike(name)]),
      AgentError,
      "holds a RAM file of that name",
    );
    assertEquals((await Deno.lstat(ramPath)).isSymlink, true, "the link is as it was");
    assertEquals(await fileExists(elsewhere), false, "nothing was made where it points");
    assertEquals(await qemusIn(agent.dir), []);
  } finally {
    await Deno.remove(ramPath);
  }
});

Deno.test("the agent logs a destination of its own that exited, once, when the source asks of it", async () => {
  await using agent = await AgentProcess.start();
  const source = await sourceLike(uniqueName("gone"));
  const target = await agent.connect();
  const [destination] = await target.prepareDestinations([source]);
  const [pid] = await qemusIn(agent.dir);
  assert(pid, "the destination runs");
  Deno.kill(pid, "SIGKILL");
  // Asked until the agent has seen the exit (it reaps its child), then twice more.
  let state = await destination!.state();
  for (let tries = 0; state.alive && tries < 200; tries++) state = await destination!.state();
  assertEquals(state.alive, false);
  await destination!.state();
  await destination!.state();
  // The agent's log is in order: once the gang's end is in it, any second exit line would be too.
  await target.close();
  assert(await eventOf(agent, (e) => e.event === "abandoned"), "the gang is abandoned");
  const exits = agent.server.events.filter((e) => e.event === "destination-exited");
  assertEquals(exits.map((e) => e.guest), [source.name], "logged once");
});
