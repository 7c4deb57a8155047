/**
 * The target agent's connections other than control, attacked as a broken
 * or hostile peer would: what each connection's events say of it, and
 * the DISK_COPY connections of a gang with a copied disk (one per disk,
 * none once the guest may run). Destinations are started but never booted.
 */
import { assert, assertEquals } from "./_assert.ts";
import { AgentProcess } from "../src/target/agent_process.ts";
import { AGENT_VERSION, encodeJson } from "../src/target/agent_protocol.ts";
import {
  FrameType,
  type FrameTypeValue,
  HEADER_BYTES,
  PROTOCOL_VERSION,
  writeHeader,
} from "../src/transfer/protocol.ts";
import { encodeHello } from "../src/transfer/hello_frame.ts";
import { eventOf } from "./_agent_fixtures.ts";

/** A raw connection to the agent that sends `frame` first. */
async function connectWith(agent: AgentProcess, frame: Uint8Array): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: agent.address.port });
  await conn.write(frame);
  return conn;
}

function portOf(conn: Deno.Conn): number {
  return (conn.localAddr as Deno.NetAddr).port;
}

Deno.test("every failure the agent logs names the kind of connection that failed", async () => {
  await using agent = await AgentProcess.start({ insecure: true, args: ["--idle-timeout", "1"] });
  const garbage = new Uint8Array(HEADER_BYTES);
  writeHeader(new DataView(garbage.buffer), 0, 99 as FrameTypeValue, 0, 0);
  const key = { key: "0".repeat(64), guest: "nobody" };
  const conns: [string, Deno.TcpConn][] = [
    // A source that says hello, then nothing: its control connection times out.
    [
      "control",
      await connectWith(
        agent,
        encodeJson(FrameType.Control, { id: 0, op: "hello", version: AGENT_VERSION }),
      ),
    ],
    [
      "RAM",
      await connectWith(
        agent,
        encodeHello({
          version: PROTOCOL_VERSION,
          pageSize: 4096,
          seed: 1n,
          token: "wrong",
          guests: [{ name: "nobody", size: 4096 }],
        }),
      ),
    ],
    ["device state", await connectWith(agent, encodeJson(FrameType.DeviceState, key))],
    ["disk copy", await connectWith(agent, encodeJson(FrameType.DiskCopy, { ...key, disk: 0 }))],
    ["unknown", await connectWith(agent, garbage)],
  ];
  try {
    for (const [kind, conn] of conns) {
      const peer = `127.0.0.1:${portOf(conn)}`;
      const failed = await eventOf(agent, (e) => e.event === "failed" && e.peer === peer, 20_000);
      assert(failed, `no failure of the ${kind} connection ${peer} is logged`);
      assertEquals(failed.connection, kind, `the failure of ${peer}: ${JSON.stringify(failed)}`);
    }
  } finally {
    for (const [, conn] of conns) conn.close();
  }
});
