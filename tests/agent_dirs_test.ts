/**
 * The agent's directories belong to it alone: one that another user owns
 * or may write (a pre-made /dev/shm/gangway of mode 0777, whose owner
 * could swap in a RAM file and read a guest's RAM) is refused at start-up
 * with the directory and the reason; missing ones are made with mode 0700.
 * Tests run as root: `nobody` stands for the other user.
 */
import { join } from "node:path";
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { checkAgentDirs } from "../src/target/agent_dirs.ts";
import { AgentProcess } from "../src/target/agent_process.ts";

const NOBODY = 65534;

/** A fresh directory for a test's own tree, removed by the returned disposer. */
async function scratch(): Promise<{ root: string } & AsyncDisposable> {
  const root = await Deno.makeTempDir({ prefix: "gangway-dirs-test-" });
  return {
    root,
    [Symbol.asyncDispose]: () => Deno.remove(root, { recursive: true }),
  };
}

async function modeOf(path: string): Promise<number> {
  return (await Deno.stat(path)).mode! & 0o7777;
}

Deno.test("checkAgentDirs() makes the directories that are missing with mode 0700, and returns their real paths", async () => {
  await using tree = await scratch();
  await Deno.mkdir(join(tree.root, "real"), { mode: 0o700 });
  await Deno.symlink(join(tree.root, "real"), join(tree.root, "link"));
  const dirs = checkAgentDirs({
    dir: join(tree.root, "ram", "deep"),
    runDir: join(tree.root, "link", "run"),
  });
  assertEquals(dirs.dir, join(tree.root, "ram", "deep"));
  assertEquals(dirs.runDir, join(tree.root, "real", "run"), "the link is resolved");
  assertEquals(dirs.diskDir, join(tree.root, "real", "run", "disks"));
  for (
    const path of [
      join(tree.root, "ram"),
      dirs.dir,
      dirs.runDir,
      join(dirs.runDir, "files"),
      join(dirs.runDir, "guests"),
      dirs.diskDir!,
    ]
  ) {
    assertEquals(await modeOf(path), 0o700, path);
  }
});

Deno.test("checkAgentDirs() refuses a directory group or others may write, naming it and the mode", async () => {
  await using tree = await scratch();
  const open = join(tree.root, "gangway");
  await Deno.mkdir(open);
  await Deno.chmod(open, 0o777);
  const runDir = join(tree.root, "run");
  assertThrows(
    () => checkAgentDirs({ dir: open, runDir }),
    Error,
    `Cannot use the RAM directory "${open}": group or others may write it (mode 0777)`,
  );
  await Deno.chmod(open, 0o770);
  assertThrows(
    () => checkAgentDirs({ dir: join(tree.root, "ram"), runDir: open }),
    Error,
    `Cannot use the run directory "${open}": group or others may write it (mode 0770)`,
  );
  for (const field of ["diskDir", "imagesDir"] as const) {
    assertThrows(
      () => checkAgentDirs({ dir: join(tree.root, "ram"), runDir, [field]: open }),
      Error,
      `"${open}": group or others may write it (mode 0770)`,
    );
  }
});

Deno.test("checkAgentDirs() refuses a directory another user owns, and one that sits in a directory others may write", async () => {
  await using tree = await scratch();
  const theirs = join(tree.root, "theirs");
  await Deno.mkdir(theirs, { mode: 0o700 });
  await Deno.chown(theirs, NOBODY, NOBODY);
  const runDir = join(tree.root, "run");
  assertThrows(
    () => checkAgentDirs({ dir: theirs, runDir }),
    Error,
    `Cannot use the RAM directory "${theirs}": it belongs to uid ${NOBODY}, not to this process's uid ${Deno.uid()}`,
  );
  // Below their directory, a directory of ours is no better: they can rename it and put theirs.
  const inTheirs = join(theirs, "ram");
  await Deno.mkdir(inTheirs, { mode: 0o700 });
  assertThrows(
    () => checkAgentDirs({ dir: inTheirs, runDir }),
    Error,
    `"${theirs}" above it belongs to uid ${NOBODY}, who could swap it`,
  );
  // The same below a directory anyone may write, unless it is sticky (as /dev/shm and /tmp are).
  const shared = join(tree.root, "shared");
  await Deno.mkdir(join(shared, "ram"), { recursive: true, mode: 0o700 });
  await Deno.chmod(shared, 0o777);
  assertThrows(
    () => checkAgentDirs({ dir: join(shared, "ram"), runDir }),
    Error,
    `group or others may write "${shared}" above it (mode 0777), and swap it`,
  );
  await Deno.chmod(shared, 0o1777);
  assertEquals(
    (checkAgentDirs({ dir: join(shared, "ram"), runDir })).dir,
    join(shared, "ram"),
  );
  // A read-only images directory may belong to root, never to another user.
  assertThrows(
    () => checkAgentDirs({ dir: join(shared, "ram"), runDir, imagesDir: theirs }),
    Error,
    `Cannot use the images directory "${theirs}": it belongs to uid ${NOBODY}`,
  );
});

Deno.test("checkAgentDirs() makes nothing when it refuses: a missing directory below one others may write, a bad images directory", async () => {
  await using tree = await scratch();
  const open = join(tree.root, "open");
  await Deno.mkdir(open);
  await Deno.chmod(open, 0o777);
  const runDir = join(tree.root, "run");
  assertThrows(
    () => checkAgentDirs({ dir: join(open, "ram", "deep"), runDir }),
    Error,
    `Cannot use the RAM directory "${
      join(open, "ram", "deep")
    }": group or others may write "${open}" above it (mode 0777), and swap it`,
  );
  assertThrows(
    () =>
      checkAgentDirs({ dir: join(tree.root, "ram"), runDir, imagesDir: join(tree.root, "none") }),
    Error,
    `Cannot use the images directory "${join(tree.root, "none")}"`,
  );
  assertEquals([...Deno.readDirSync(tree.root)].map((e) => e.name), ["open"]);
  assertEquals([...Deno.readDirSync(open)], []);
});

Deno.test("the agent does not start on a RAM directory of mode 0777 or of another user, and says why", async () => {
  await using tree = await scratch();
  const ram = join(tree.root, "gangway");
  await Deno.mkdir(ram);
  await Deno.chmod(ram, 0o777);
  const runDir = join(tree.root, "run");
  const started = await AgentProcess.start({ insecure: true, dir: ram, runDir }).catch((e) => e);
  if (started instanceof AgentProcess) await started.stop();
  assert(started instanceof Error, "the agent started on a RAM directory of mode 0777");

  // What it says, on its standard error.
  await Deno.chmod(ram, 0o700);
  await Deno.chown(ram, NOBODY, NOBODY);
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      new URL("../src/cli/agent.ts", import.meta.url).pathname,
      "--listen",
      "127.0.0.1:0",
      "--insecure",
      "--dir",
      ram,
      "--run-dir",
      runDir,
    ],
    stdout: "null",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  assertEquals(code, 1);
  const said = new TextDecoder().decode(stderr);
  assert(
    said.includes(`Cannot use the RAM directory "${ram}": it belongs to uid ${NOBODY}`),
    said,
  );
});
