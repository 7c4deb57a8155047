import { assert, assertEquals, assertRejects, assertThrows } from "./_assert.ts";
import { Gang } from "../src/scan/gang.ts";
import { transferGang } from "../src/transfer/transfer_gang.ts";
import { checkConvergenceOptions, finalRoundMs } from "../src/plan/convergence.ts";
import { randomSeed } from "../src/transfer/seed.ts";
import { PAGE_SIZE, RamFile } from "../src/native/ram_file.ts";
import { makeRamFile, patternPage, removeFiles, shmPath } from "./_fixtures.ts";
import { startReceiver } from "./_transfer.ts";
import { waitFor } from "./fault_fixtures.ts";

Deno.test("finalRoundMs() puts a final round's pages, whole, on the link at its measured rate", () => {
  assertEquals(finalRoundMs(1000, 1000 * PAGE_SIZE), 1000);
  assertEquals(finalRoundMs(250, 1000 * PAGE_SIZE), 250);
  assertEquals(finalRoundMs(0, 0), 0, "nothing to send takes no time, measured or not");
  assertEquals(finalRoundMs(1, 0), Infinity, "a link never measured promises nothing");
  for (const maxDowntimeMs of [0, -5, Number.NaN, Infinity]) {
    assertThrows(
      () => checkConvergenceOptions({ maxDowntimeMs }),
      RangeError,
      "maxDowntimeMs must be a positive number of ms",
    );
  }
});

Deno.test("transferGang() with maxDowntimeMs does not make a pause whose final round would take longer, and makes one that fits", async (t) => {
  const pages = 4096;
  const changed = 3000;
  const changes = new Uint8Array(changed * PAGE_SIZE);
  for (let p = 0; p < changed; p++) changes.set(patternPage(77_777 + p), p * PAGE_SIZE);
  for (const ending of ["one at a time", "gang"] as const) {
    for (const maxDowntimeMs of [0.001, 600_000]) {
      await t.step(`${ending}, at most ${maxDowntimeMs} ms`, async () => {
        const paths = [0, 1].map((g) =>
          makeRamFile(
            shmPath(`downtime${g}`),
            Array.from({ length: pages }, (_, p) => patternPage(g * pages + p)),
          )
        );
        await using receiver = await startReceiver();
        try {
          using gang = Gang.open(paths.map((path, g) => ({ name: `g${g}`, path })), {
            seed: randomSeed(),
          });
          const pauses: string[] = [];
          // One live round, then the pause: what the guests wrote as it ended is the final round's.
          const migration = transferGang(gang, await receiver.connect(), {
            maxRounds: 2,
            maxDowntimeMs,
            onProgress: ({ round, pagesDone, pagesTotal }) => {
              if (round !== 1 || pagesDone < pagesTotal || pauses.length > 0) return;
              pauses.push("written");
              for (const path of paths) {
                using file = RamFile.open(path, { write: true });
                file.write(Uint32Array.from({ length: changed }, (_, p) => p), changes);
              }
            },
            ...(ending === "gang"
              ? { pause: () => void pauses.push("gang") }
              : { pauseGuest: (g: number) => void pauses.push(`g${g}`) }),
          });
          if (maxDowntimeMs > 1) {
            const report = await migration;
            assert(report.verified);
            assertEquals(pauses, ending === "gang" ? ["written", "gang"] : ["written", "g0", "g1"]);
            return;
          }
          await assertRejects(
            () => migration,
            Error,
            ending === "gang"
              ? "The gang would stay paused about"
              : 'Guest "g0" would stay paused about',
          );
          assertEquals(pauses, ["written"], "no guest was paused");
          // The target hears why, and discards the gang.
          await waitFor(() => receiver.events.some((e) => e.event === "failed"), "its failure");
          const failed = receiver.events.find((e) => e.event === "failed");
          assert(failed?.event === "failed" && failed.error.includes("over the limit of 0.001 ms"));
        } finally {
          await removeFiles(...paths);
        }
      });
    }
  }
});
