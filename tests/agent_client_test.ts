/**
 * The source's side of the control connection against a scripted agent:
 * what it writes, frame by frame.
 */
import { assertEquals } from "./_assert.ts";
import { AgentClient } from "../src/target/agent_client.ts";
import {
  decodeJson,
  encodeJson,
  FILE_PIECE_BYTES,
  FrameChannel,
  MAX_CONTROL_BYTES,
} from "../src/target/agent_protocol.ts";
import { sha256Hex } from "./_fixtures.ts";
import { FrameType } from "../src/transfer/protocol.ts";

Deno.test("AgentClient: a request made while a file is sent waits for the file's last piece", async () => {
  // More than the sockets' buffers hold: the source is still sending when the agent reads.
  const content = new Uint8Array(64 * FILE_PIECE_BYTES).fill(7);
  const path = await Deno.makeTempFile();
  await Deno.writeFile(path, content);
  const ref = { name: "base.raw", sha256: sha256Hex(content), size: content.length };
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let client: AgentClient | undefined;
  let pinged: Promise<unknown> | undefined;
  // The agent: answers the hello, then notes each frame's kind; at the file's first piece the
  // source is asked for a ping (as its timer would), which must come after the file's last piece.
  const agent = (async () => {
    const channel = new FrameChannel(await listener.accept(), {
      maxBody: MAX_CONTROL_BYTES,
      writeTimeoutMs: 10_000,
    });
    const answer = (body: Uint8Array, fields: Record<string, unknown> = {}) => {
      const { id } = decodeJson(body, "A request") as { id: number };
      return channel.write(encodeJson(FrameType.Control, { id, ok: true, ...fields }));
    };
    await answer((await channel.reader.next(10_000))!.body, { maxGuests: 4, maxMemoryMiB: 4096 });
    const seen: string[] = [];
    let fileBytes = 0;
    let put: Uint8Array | undefined;
    while (seen.at(-1) !== "ping") {
      const frame = (await channel.reader.next(10_000))!;
      if (frame.type === FrameType.FileData) {
        if (fileBytes === 0) pinged = client!.request("ping");
        fileBytes += frame.body.length;
        if (seen.at(-1) !== "pieces") seen.push("pieces");
        if (fileBytes === ref.size) seen.push("whole file");
        continue;
      }
      const { op } = decodeJson(frame.body, "A request") as { op: string };
      seen.push(op);
      if (op === "put") put = frame.body.slice();
      else await answer(frame.body);
    }
    await answer(put!);
    return seen;
  })();
  try {
    client = await AgentClient.connect(
      { hostname: "127.0.0.1", port: (listener.addr as Deno.NetAddr).port },
      { insecure: true },
    );
    await client.sendFile(ref, path);
    assertEquals(await agent, ["put", "pieces", "whole file", "ping"]);
    await pinged;
  } finally {
    client?.close();
    await Deno.remove(path);
  }
});
