/**
 * The relay directories of remote targets at the source: those that
 * sources killed in the middle of a migration left are removed by the
 * next one.
 */
import { basename, dirname, join } from "node:path";
import { assert, assertEquals } from "./_assert.ts";
import { makeRelayDir, removeStaleRelayDirs } from "../src/target/_relay_dir.ts";
import { pathExists } from "../src/_path_exists.ts";

/** The pid of a process that has run and ended. */
async function deadPid(): Promise<number> {
  const child = new Deno.Command("true").spawn();
  await child.status;
  return child.pid;
}

Deno.test("removeStaleRelayDirs() removes the relay directories of processes that are gone, and only those", async () => {
  const parent = await Deno.makeTempDir({ prefix: "gangway-relay-test-" });
  // A live process that is not this one: it runs until its stdin closes.
  const live = new Deno.Command("cat", { stdin: "piped", stdout: "null" }).spawn();
  try {
    const gone = await deadPid();
    const names = {
      gone: `gw-relay-${gone}-0a1b2c`,
      live: `gw-relay-${live.pid}-0a1b2c`,
      mine: `gw-relay-${Deno.pid}-0a1b2c`,
      unnamed: "gw-relay-0a1b2c3d4e5f", // no pid: made by an older gangway, kept
      other: `gw-relayed-${gone}-0a1b2c`,
    };
    for (const name of Object.values(names)) {
      await Deno.mkdir(join(parent, name));
      await Deno.writeTextFile(join(parent, name, "0.migrate"), "");
    }
    await Deno.writeTextFile(join(parent, `gw-relay-${gone}-file`), ""); // not a directory

    assertEquals(await removeStaleRelayDirs(parent), [join(parent, names.gone)]);
    const left = (await Array.fromAsync(Deno.readDir(parent))).map((e) => e.name).sort();
    assertEquals(
      left,
      [names.live, names.mine, names.unnamed, names.other, `gw-relay-${gone}-file`].sort(),
    );
  } finally {
    live.stdin.close();
    await live.status;
    await Deno.remove(parent, { recursive: true });
  }
});

Deno.test("makeRelayDir() names its directory with this process's pid and removes a dead source's", async () => {
  const made = await makeRelayDir();
  const stale = join(dirname(made), `gw-relay-${await deadPid()}-0a1b2c`);
  await Deno.mkdir(stale);
  let again: string | undefined;
  try {
    assert(basename(made).startsWith(`gw-relay-${Deno.pid}-`), made);
    again = await makeRelayDir();
    assert(!(await pathExists(stale)), `the dead source's "${stale}" is left`);
    assert(await pathExists(made), "this process's own relay directory is removed");
  } finally {
    for (const dir of [made, stale, again]) {
      if (dir) await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  }
});
