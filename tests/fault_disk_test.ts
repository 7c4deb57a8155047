import { assert, assertEquals, assertSameBytes } from "./_assert.ts";
import { Gang } from "../src/scan/gang.ts";
import { transferGang } from "../src/transfer/transfer_gang.ts";
import { randomSeed } from "../src/transfer/seed.ts";
import { connectTarget } from "../src/transport/connect_target.ts";
import { makeRamFile, patternPage, readRamFile, removeFiles, shmPath } from "./_fixtures.ts";
import { startReceiver } from "./_transfer.ts";
import { assertSafeFailure, startLiveGang } from "./fault_fixtures.ts";
import { makeLabCerts } from "./tls_fixtures.ts";

/** Runs a program; true when it exits with 0. */
async function run(program: string, args: string[]): Promise<boolean> {
  try {
    const output = await new Deno.Command(program, { args, stdout: "null", stderr: "null" })
      .output();
    return output.success;
  } catch {
    return false;
  }
}

/** Whether this machine lets the tests mount a small tmpfs (root, and mount allowed). */
async function canMountTmpfs(): Promise<boolean> {
  const dir = await Deno.makeTempDir({ prefix: "gangway-mount-probe-" });
  try {
    if (!(await run("mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", dir]))) return false;
    await run("umount", [dir]);
    return true;
  } finally {
    await Deno.remove(dir);
  }
}

const MOUNT = await canMountTmpfs();

/** A tmpfs of `size` (mount's syntax: "2m") on a fresh directory, unmounted and removed when disposed. */
async function smallTmpfs(size: string): Promise<{ dir: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "gangway-full-" });
  if (!(await run("mount", ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", dir]))) {
    await Deno.remove(dir);
    throw new Error(`Cannot mount a tmpfs of ${size} on "${dir}"`);
  }
  return {
    dir,
    async [Symbol.asyncDispose]() {
      const unmounted = await run("umount", [dir]);
      await Deno.remove(dir, { recursive: true });
      assert(unmounted, "unmount the tmpfs");
    },
  };
}

Deno.test({
  name:
    "a full target disk fails the migration with the receiver's ENOSPC, and a gang that fits goes next",
  ignore: !MOUNT, // needs root and mount: skipped (with this reason) where the kernel forbids it
  async fn() {
    await using certs = await makeLabCerts();
    await using disk = await smallTmpfs("2m");
    const dir = disk.dir;
    const small = shmPath("fits");
    try {
      makeRamFile(small, [patternPage(7), "hole", patternPage(8)]);
      {
        // 2 x 4 MiB of distinct pages: four times what the disk holds.
        await using gang = startLiveGang("full", 2, 1024);
        await using receiver = await startReceiver({ dir, token: certs.token, tls: certs });
        const conn = await connectTarget({ hostname: "127.0.0.1", port: receiver.port }, {
          ca: certs.ca,
        });
        let error: unknown;
        await gang.migrate(conn, { token: certs.token }).catch((e) => (error = e));
        await assertSafeFailure(
          error,
          /Target refused: Cannot write \d+ pages to ".*": no space left on device \(ENOSPC\)/,
          gang,
          receiver,
        );

        // The space is free again: a gang that fits goes through the same receiver.
        using next = Gang.open([{ name: "fits", path: small }], { seed: randomSeed() });
        const conn2 = await connectTarget({ hostname: "127.0.0.1", port: receiver.port }, {
          ca: certs.ca,
        });
        const report = await transferGang(next, conn2, { token: certs.token });
        assert(report.verified);
        assertSameBytes(readRamFile(`${dir}/fits`), readRamFile(small));
        assertEquals([...Deno.readDirSync(dir)].map((e) => e.name), ["fits"]);
      }
    } finally {
      await removeFiles(small);
    }
  },
});

Deno.test({
  name: "a target directory that is full already refuses the gang and keeps no journal of it",
  ignore: !MOUNT, // needs root and mount: skipped (with this reason) where the kernel forbids it
  async fn() {
    await using disk = await smallTmpfs("1m");
    const dir = disk.dir;
    const path = shmPath("nospace");
    try {
      // Filled to the last byte, as a user's disk may be.
      await run("dd", ["if=/dev/zero", `of=${dir}/filler`, "bs=64k"]);
      makeRamFile(path, [patternPage(1), patternPage(2)]);
      await using receiver = await startReceiver({ dir });
      using gang = Gang.open([{ name: "nospace", path }], { seed: randomSeed() });
      let error: unknown;
      await transferGang(gang, receiver.connect()).catch((e) => (error = e));
      assert(error instanceof Error && error.message.includes("is full"), String(error));
      assertEquals([...Deno.readDirSync(dir)].map((e) => e.name), ["filler"]);
    } finally {
      await removeFiles(path);
    }
  },
});
