/**
 * Where a target agent lets a shared disk be (red-team finding s20-1: an
 * empty `--shared-disks` entry made every absolute path a shared disk).
 */
import { join } from "node:path";
import { assert, assertEquals, assertRejects, assertThrows } from "./_assert.ts";
import {
  qcow2NamesOtherFiles,
  resolveSharedDirs,
  resolveSharedDisk,
  resolveSharedDisks,
  strictlyInside,
} from "../src/target/shared_disks.ts";
import {
  checkDescription,
  DescriptionError,
  type MachineDescription,
} from "../src/target/machine_description.ts";
import { machineOf } from "../src/target/agent_machine.ts";

/** A shared directory with a disk, a neighbour that shares its name's start, and a secret outside. */
async function tree(): Promise<AsyncDisposable & Record<"root" | "shared" | "disk", string>> {
  const root = await Deno.makeTempDir({ prefix: "gangway-shared-" });
  const shared = join(root, "disks");
  await Deno.mkdir(shared);
  await Deno.mkdir(join(root, "disksX"));
  await Deno.writeTextFile(join(root, "disksX", "y"), "not shared");
  await Deno.writeTextFile(join(root, "secret"), "host file");
  const disk = join(shared, "vm1.raw");
  await Deno.writeTextFile(disk, "disk");
  return {
    root,
    shared,
    disk,
    [Symbol.asyncDispose]: () => Deno.remove(root, { recursive: true }),
  };
}

Deno.test("resolveSharedDirs() refuses an empty, relative or missing entry, the root and a file, naming the flag", async () => {
  await using t = await tree();
  const cases: [string[], string][] = [
    [[t.shared, ""], 'directory "" (--shared-disks): an empty entry'],
    [["srv/disks"], "it is not an absolute path"],
    [[join(t.root, "none")], "it does not exist"],
    [[t.disk], "it is not a directory"],
    [["/"], "it is the root directory, which would allow every path"],
  ];
  for (const [dirs, message] of cases) {
    assertThrows(() => resolveSharedDirs(dirs), Error, message);
  }
  const link = join(t.root, "link");
  await Deno.symlink(t.shared, link);
  assertEquals(resolveSharedDirs([link, t.shared]), [t.shared, t.shared]);
});

Deno.test("strictlyInside() compares path components, not strings", () => {
  assert(strictlyInside("/srv/disks/y", "/srv/disks"));
  assert(strictlyInside("/srv/disks/a/b", "/srv/disks"));
  assert(!strictlyInside("/srv/disksX/y", "/srv/disks"));
  assert(!strictlyInside("/srv/disks", "/srv/disks"));
  assert(!strictlyInside("/srv", "/srv/disks"));
  assert(!strictlyInside("/etc/shadow", "/srv/disks"));
});

Deno.test("resolveSharedDisk() takes a file inside a shared directory by its real path, and nothing else", async () => {
  await using t = await tree();
  const dirs = resolveSharedDirs([t.shared]);
  assertEquals(await resolveSharedDisk(t.disk, dirs), t.disk);
  const out = join(t.shared, "out.raw");
  await Deno.symlink(join(t.root, "secret"), out);
  const inner = join(t.shared, "inner.raw");
  await Deno.symlink(t.disk, inner);
  assertEquals(await resolveSharedDisk(inner, dirs), t.disk, "a link inside is its target");
  for (
    const path of [
      out, // a link out of the directory
      join(t.root, "disksX", "y"), // a neighbour whose name starts the same
      join(t.root, "secret"),
      t.shared, // the directory itself
      join(t.shared, "none.raw"),
      "/dev/null",
    ]
  ) {
    assertEquals(await resolveSharedDisk(path, dirs), undefined, path);
  }
  assertEquals(await resolveSharedDisk("/dev/null", ["/dev"]), undefined, "a device");
});

const GOOD: MachineDescription = {
  name: "vm1",
  memoryMiB: 64,
  cpus: 1,
  accelerator: "tcg",
  backendId: "gangway-ram",
  kernelArgs: [],
};

Deno.test("a shared disk reaches QEMU only at the real path the agent resolved inside its directories", async () => {
  await using t = await tree();
  const dirs = resolveSharedDirs([t.shared]);
  const limits = { maxMemoryMiB: 128, sharedDisks: dirs };
  const secret = checkDescription(
    { ...GOOD, disks: [{ path: join(t.root, "secret"), format: "raw" }] },
    limits,
  );
  await assertRejects(
    () => resolveSharedDisks(secret, dirs),
    DescriptionError,
    'field "disks[0].path" must be a file in a shared-disk directory of this agent',
  );
  // machineOf() never takes a shared disk's path as the source sent it.
  assertThrows(() => machineOf(secret, {}, "qemu"), DescriptionError, 'field "disks[0].path"');
  const link = join(t.root, "via-link");
  await Deno.symlink(t.shared, link);
  const good = checkDescription(
    { ...GOOD, disks: [{ path: join(link, "vm1.raw"), format: "raw" }] },
    limits,
  );
  const sharedDisks = await resolveSharedDisks(good, dirs);
  assertEquals(machineOf(good, { sharedDisks }, "qemu").disks, [{ path: t.disk, format: "raw" }]);
});

/** A qcow2 header (version 3) naming a backing file, or with the external data file bit. */
function qcow2Header(options: { backing?: boolean; externalData?: boolean }): Uint8Array {
  const header = new Uint8Array(512);
  const view = new DataView(header.buffer);
  view.setUint32(0, 0x514649fb);
  view.setUint32(4, 3);
  if (options.backing) {
    const name = new TextEncoder().encode("/etc/shadow");
    view.setBigUint64(8, 200n);
    view.setUint32(16, name.length);
    header.set(name, 200);
  }
  if (options.externalData) view.setBigUint64(72, 4n);
  view.setUint32(100, 104); // header length
  return header;
}

Deno.test("a qcow2 shared disk whose header names another file is refused, unless a base replaces it", async () => {
  await using t = await tree();
  const dirs = resolveSharedDirs([t.shared]);
  const limits = { maxMemoryMiB: 128, sharedDisks: dirs };
  const write = (name: string, bytes: Uint8Array) => Deno.writeFile(join(t.shared, name), bytes);
  await write("plain.qcow2", qcow2Header({}));
  await write("backed.qcow2", qcow2Header({ backing: true }));
  await write("data.qcow2", qcow2Header({ externalData: true }));
  await write("base.raw", new Uint8Array(512));
  const describe = (disk: Record<string, unknown>) =>
    checkDescription({ ...GOOD, disks: [{ format: "qcow2", ...disk }] }, limits);
  const path = (name: string) => join(t.shared, name);

  // QEMU would open the backing file its header names, outside every shared directory.
  await assertRejects(
    () => resolveSharedDisks(describe({ path: path("backed.qcow2") }), dirs),
    DescriptionError,
    'field "disks[0].path" is a qcow2 image that names a backing file in its header',
  );
  await assertRejects(
    () => resolveSharedDisks(describe({ path: path("data.qcow2"), base: path("base.raw") }), dirs),
    DescriptionError,
    "keeps its data in an external file",
  );
  // A base given in the description replaces the header's backing file (backing.file.filename).
  const based = describe({ path: path("backed.qcow2"), base: path("base.raw") });
  assertEquals(await resolveSharedDisks(based, dirs), {
    0: { path: path("backed.qcow2"), base: path("base.raw") },
  });
  assertEquals(await resolveSharedDisks(describe({ path: path("plain.qcow2") }), dirs), {
    0: { path: path("plain.qcow2") },
  });
  // A raw disk is never read as qcow2 (format=raw), whatever its bytes.
  assertEquals(await qcow2NamesOtherFiles(path("base.raw"), false), undefined);
});
