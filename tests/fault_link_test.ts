import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { connectTarget } from "../src/transport/connect_target.ts";
import { FrameReader, FrameWriter, TimeoutError } from "../src/transfer/frame_io.ts";
import { encodeU32, FrameType } from "../src/transfer/protocol.ts";
import {
  ReceiverAnswers,
  SLOWEST_LINK_BYTES_PER_SECOND,
  TargetError,
} from "../src/transfer/receiver_answers.ts";
import { startReceiver } from "./_transfer.ts";
import { startFaultProxy } from "./_fault_proxy.ts";
import { assertSafeFailure, startLiveGang } from "./fault_fixtures.ts";
import { makeLabCerts } from "./tls_fixtures.ts";

const LOCAL = "127.0.0.1";

/** Runs a migration expected to fail; returns its error. */
async function failure(run: () => Promise<unknown>): Promise<unknown> {
  try {
    await run();
  } catch (error) {
    return error;
  }
  throw new Error("The migration succeeded despite the fault");
}

Deno.test("a link cut mid-transfer fails the migration with a clear error, and the target discards the gang", async (t) => {
  await using certs = await makeLabCerts();
  for (const when of ["round 1", "the final round"]) {
    await t.step(`cut in ${when}`, async () => {
      await using gang = startLiveGang("cut");
      await using receiver = await startReceiver({ tls: certs, token: certs.token });
      await using proxy = startFaultProxy({ hostname: LOCAL, port: receiver.port });
      const conn = await connectTarget({ hostname: LOCAL, port: proxy.port }, { ca: certs.ca });
      const error = await failure(() =>
        gang.migrate(conn, {
          token: certs.token,
          // Slow enough that round 1 is still going at the cut.
          maxBandwidth: when === "round 1" ? 8_000_000 : undefined,
          onProgress: (p) => {
            if (when === "round 1" && p.round === 1 && p.pagesDone >= 1024) proxy.cut();
          },
          atPause: when === "the final round" ? () => proxy.cut() : undefined,
        })
      );
      await assertSafeFailure(
        error,
        /Lost the target|Cannot send to the target|Target closed the connection/,
        gang,
        receiver,
      );
      assert(gang.paused === (when === "round 1" ? 0 : 1));
    });
  }
});

Deno.test("a stalled link fails the migration after the stall timeout instead of hanging", async (t) => {
  await using certs = await makeLabCerts();
  for (const when of ["round 1", "the final round"]) {
    await t.step(`stall in ${when}`, async () => {
      // Big enough that round 1 cannot hide in the socket buffers.
      await using gang = startLiveGang("stall", 2, when === "round 1" ? 8192 : 1024);
      await using receiver = await startReceiver({
        tls: certs,
        token: certs.token,
        idleTimeoutMs: 1500,
      });
      await using proxy = startFaultProxy({ hostname: LOCAL, port: receiver.port });
      const conn = await connectTarget({ hostname: LOCAL, port: proxy.port }, { ca: certs.ca });
      const started = performance.now();
      const error = await failure(() =>
        gang.migrate(conn, {
          token: certs.token,
          stallTimeoutMs: 1500,
          // A target that hangs once a guest is paused: the paused wait alone must end it.
          ...(when === "round 1"
            ? { answerTimeoutMs: 1500 }
            : { answerTimeoutMs: 120_000, pausedAnswerTimeoutMs: 1500 }),
          onProgress: (p) => {
            if (when === "round 1" && p.round === 1 && p.pagesDone >= 1024) proxy.stall();
          },
          atPause: when === "the final round" ? () => proxy.stall() : undefined,
        })
      );
      const seconds = (performance.now() - started) / 1000;
      await assertSafeFailure(
        error,
        when === "round 1"
          ? /took no data for 1\.5 s: it stopped reading or the link stalled/
          : /did not answer within 1\.5 s/,
        gang,
        receiver,
      );
      assert(seconds < 30, `the failure came after ${seconds} s`);
      const failed = receiver.events.find((e) => e.event === "failed");
      assert(
        failed?.event === "failed" && failed.error.includes("No data for 1.5 s"),
        JSON.stringify(failed),
      );
    });
  }
});

Deno.test("a page corrupted on the wire is refused by its frame's digest, and the migration fails safely", async () => {
  await using gang = startLiveGang("corrupt", 2, 512);
  await using receiver = await startReceiver();
  await using proxy = startFaultProxy({ hostname: LOCAL, port: receiver.port }, {
    corruptFirstPage: true,
  });
  const conn = await connectTarget({ hostname: LOCAL, port: proxy.port }, { insecure: true });
  const error = await failure(() => gang.migrate(conn));
  assert(proxy.corrupted, "the proxy flipped a byte");
  await assertSafeFailure(error, /does not match its digest: corrupted in transit/, gang, receiver);
});

Deno.test("a byte flipped inside TLS is caught by TLS before the receiver sees it", async () => {
  await using certs = await makeLabCerts();
  await using gang = startLiveGang("tamper", 2, 512);
  await using receiver = await startReceiver({ tls: certs, token: certs.token });
  await using proxy = startFaultProxy({ hostname: LOCAL, port: receiver.port }, {
    flipByteAt: 100_000,
  });
  const conn = await connectTarget({ hostname: LOCAL, port: proxy.port }, { ca: certs.ca });
  const error = await failure(() => gang.migrate(conn, { token: certs.token }));
  assert(proxy.corrupted, "the proxy flipped a byte");
  await assertSafeFailure(
    error,
    /Lost the target|Cannot send to the target|Target closed the connection|Target refused/,
    gang,
    receiver,
  );
  const failed = receiver.events.find((e) => e.event === "failed");
  assert(
    failed?.event === "failed" && !failed.error.includes("hash"),
    `TLS, not the page hash, caught it: ${JSON.stringify(failed)}`,
  );
});

Deno.test("FrameWriter fails a write that makes no progress for the stall timeout", async () => {
  const stuck = {
    read: () => new Promise<number | null>(() => {}),
    write: () => new Promise<number>(() => {}),
  };
  const writer = new FrameWriter(stuck, { stallTimeoutMs: 200 });
  await writer.write(new Uint8Array(100));
  await assertRejects(() => writer.flush(), TimeoutError, "The peer took no data for 0.2 s");
});

/** A target that says `answer` (a whole frame) once `say` is called, and nothing before. */
function quietTarget() {
  let pending: Uint8Array | undefined;
  let wake: (() => void) | undefined;
  const stream = {
    async read(p: Uint8Array): Promise<number | null> {
      while (!pending) await new Promise<void>((resolve) => (wake = resolve));
      p.set(pending);
      const n = pending.length;
      pending = undefined;
      return n;
    },
    write: (p: Uint8Array) => Promise.resolve(p.length),
  };
  const say = (frame: Uint8Array) => {
    pending = frame;
    wake?.();
  };
  return { answers: new ReceiverAnswers(new FrameReader(stream, 64)), say };
}

Deno.test("the wait for the target's answer counts from the last bytes reaching it: a slow link's socket holds minutes of them", async (t) => {
  await t.step("while the bytes on their way fall, the wait goes on past the timeout", async () => {
    const { answers, say } = quietTarget();
    void answers.run();
    // The link delivers 50 KB between every look (2.5 MB/s); the target answers once it has it
    // all, after ten looks of a quarter of the timeout each: 2.5 timeouts after the last write.
    const delivered = 50_000;
    let onTheWay = 10 * delivered;
    const looked = () => {
      if (onTheWay === 0) say(encodeU32(FrameType.RoundDone, 7));
      const now = onTheWay;
      onTheWay = Math.max(0, onTheWay - delivered);
      return now;
    };
    assertEquals(await answers.expect(FrameType.RoundDone, 80, looked), 7);
    assertEquals(onTheWay, 0, "the answer came once every byte was delivered");
  });
  await t.step(
    "bytes that stop moving, or only come and go, are a stalled link or target, said as such",
    async () => {
      let n = 0;
      const cases = [() => 5000, () => (n++ % 2 ? 5000 : 6000)];
      for (const looked of cases) {
        const { answers } = quietTarget();
        void answers.run();
        await assertRejects(
          () => answers.expect(FrameType.RoundDone, 80, looked),
          TargetError,
          "The target took no data for 0.08 s with 5000 bytes unacknowledged (the link stalled, or the target stopped reading",
        );
      }
    },
  );
  await t.step(
    "a link that delivers a trickle fails once it is slower than the slowest allowed",
    async () => {
      const { answers } = quietTarget();
      void answers.run();
      // A tenth of a second's worth at the slowest rate, falling a byte per look: never done.
      let onTheWay = SLOWEST_LINK_BYTES_PER_SECOND / 10;
      const started = performance.now();
      await assertRejects(
        () => answers.expect(FrameType.RoundDone, 80, () => onTheWay--),
        TargetError,
        "The link to the target delivers under 0.5 Mbit/s",
      );
      const ms = performance.now() - started;
      assert(ms >= 180, `the wait went on while bytes moved, up to the slowest rate's: ${ms} ms`);
    },
  );
  await t.step("once every byte arrived, the target has the timeout to answer", async () => {
    const { answers } = quietTarget();
    void answers.run();
    await assertRejects(
      () => answers.expect(FrameType.RoundDone, 80, () => 0),
      TargetError,
      "Target did not answer within 0.08 s of the last byte reaching it (waiting for RoundDone)",
    );
  });
});
