/**
 * Builds a Debian guest image from the package archive and keeps it in
 * the cache: `mmdebstrap` makes the tree, gangway adds its units, the
 * kernel and initrd are copied out of `/boot`, and `mkfs.ext4 -d` turns
 * the tree into a raw disk without mounting anything.
 *
 * @module
 */
import { dirname, join } from "node:path";
import {
  DEBIAN_SUITE,
  type DebianRecipe,
  type ImageFile,
  imageFiles,
  mmdebstrapArgs,
  recipeKey,
} from "./_debian_recipes.ts";
import { ensurePackages, isRoot, type Requirement } from "./_packages.ts";
import { run, runWithProgress } from "./_run.ts";
import { pathExists } from "../_path_exists.ts";

/** A Debian image in the cache. */
export interface DebianImage {
  /** The kernel copied from the image's /boot. */
  kernel: string;
  /** Its initrd (made by initramfs-tools inside the image). */
  initrd: string;
  /** Kernel release, e.g. `6.1.0-57-cloud-amd64`. */
  kernelVersion: string;
  /** The raw ext4 disk, read-only from then on: every guest gets its own overlay. */
  disk: string;
}

/** What building an image needs besides apt. */
const BUILD_REQUIREMENTS: readonly Requirement[] = [
  { file: "/usr/bin/mmdebstrap", debian: "mmdebstrap" },
  { file: "/usr/sbin/mkfs.ext4", debian: "e2fsprogs" },
];
/** Written last: an entry without it is incomplete (and never renamed into place). */
const MANIFEST = "image.json";
const DISK = "disk.raw";
const MIB = 2 ** 20;
/** Free space in the guest's file system: the database and logs grow into it. */
const FREE_SPACE = 768 * MIB;

/**
 * Returns the cached image of a recipe from `dir`, building it when it is
 * missing (one to two minutes, progress through `say`). Two processes may
 * build at once: each builds under a temporary name and the first to
 * rename its result into place wins.
 *
 * Requires root to build (mmdebstrap), `--allow-run`, `--allow-read`,
 * `--allow-write`.
 */
export async function ensureDebianImage(
  dir: string,
  recipe: DebianRecipe,
  say: (line: string) => void,
): Promise<DebianImage> {
  const home = join(dir, `${recipe.name}-${await recipeKey(recipe)}`);
  const cached = await readManifest(home);
  if (cached) return cached;
  if (!isRoot()) {
    throw new Error(
      `Cannot build guest image "${recipe.name}": mmdebstrap needs root ` +
        "(build it once as root; it is cached in " + dir + ")",
    );
  }
  await ensurePackages(BUILD_REQUIREMENTS, "build Debian guest images");
  const tmp = await Deno.makeTempDir({ dir, prefix: `.${recipe.name}-` });
  try {
    await build(tmp, recipe, say);
    try {
      await Deno.rename(tmp, home);
    } catch (error) {
      const built = await readManifest(home); // another process was faster
      if (!built) throw error;
      await Deno.remove(tmp, { recursive: true });
      return built;
    }
    await run("sync", []); // the manifest and the rename
    return (await readManifest(home))!;
  } catch (error) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw error;
  }
}

/** Builds into `out`: kernel, initrd, disk, the package list, and the manifest last. */
async function build(out: string, recipe: DebianRecipe, say: (line: string) => void) {
  const started = performance.now();
  const elapsed = () => `${((performance.now() - started) / 1000).toFixed(0)} s`;
  const root = join(out, "root");
  say(`building image ${recipe.name} from Debian ${DEBIAN_SUITE} packages (a minute or two)`);
  await runWithProgress("mmdebstrap", mmdebstrapArgs(recipe, root), (line) => {
    if (line.startsWith("I: ") || line.startsWith("E: ")) {
      say(`${recipe.name} ${elapsed()}: ${line}`);
    }
  });
  for (const file of imageFiles(recipe)) await addFile(root, file);
  const kernelVersion = await kernelRelease(join(root, "boot"));
  const kernel = `vmlinuz-${kernelVersion}`;
  const initrd = `initrd.img-${kernelVersion}`;
  await Deno.copyFile(join(root, "boot", kernel), join(out, kernel));
  await Deno.copyFile(join(root, "boot", initrd), join(out, initrd));
  const packages = await run("dpkg-query", [
    `--admindir=${join(root, "var/lib/dpkg")}`,
    "--show",
    "--showformat=${Package} ${Version}\\n",
  ]);
  await Deno.writeTextFile(join(out, "packages.txt"), packages);
  say(`${recipe.name} ${elapsed()}: making the ext4 disk (mkfs.ext4 -d, nothing mounted)`);
  const size = diskBytes(Number((await run("du", ["-sb", root])).split("\t")[0]));
  const disk = join(out, DISK);
  await Deno.writeFile(disk, new Uint8Array());
  await Deno.truncate(disk, size);
  await run("mkfs.ext4", ["-q", "-L", "gangway", "-d", root, disk]);
  await Deno.remove(root, { recursive: true });
  await Deno.chmod(disk, 0o444); // the shared base: guests write to their overlays only
  // On disk before the manifest says the image is complete (a crash then leaves no manifest over
  // unwritten data), and its gigabyte of writeback not left to run under the migrations measured
  // next: gangway, first in the lab run that had just built its image, took 5.4 s where it took
  // 3.2-3.7 s in runs after (docs/lab-results/runs/ab-39).
  await run("sync", []);
  const manifest = { name: recipe.name, kernel, initrd, kernelVersion, disk: DISK };
  await Deno.writeTextFile(join(out, MANIFEST), JSON.stringify(manifest, null, 2) + "\n");
  say(`${recipe.name}: built in ${elapsed()}`);
}

/** The size of a disk for a tree of `treeBytes`: room to grow, in whole 256 MiB. */
export function diskBytes(treeBytes: number): number {
  const step = 256 * MIB;
  return Math.ceil((treeBytes * 1.25 + FREE_SPACE) / step) * step;
}

/** The cached image, if its build finished. */
async function readManifest(home: string): Promise<DebianImage | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(join(home, MANIFEST));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
  const manifest = JSON.parse(text) as Record<string, string>;
  return {
    kernel: join(home, manifest.kernel!),
    initrd: join(home, manifest.initrd!),
    kernelVersion: manifest.kernelVersion!,
    disk: join(home, manifest.disk!),
  };
}

/** The release of the one kernel in a tree's /boot. */
async function kernelRelease(boot: string): Promise<string> {
  const releases: string[] = [];
  for await (const entry of Deno.readDir(boot)) {
    const match = /^vmlinuz-(.+)$/.exec(entry.name);
    if (match && await pathExists(join(boot, `initrd.img-${match[1]}`))) releases.push(match[1]!);
  }
  if (releases.length !== 1) {
    throw new Error(
      `Cannot find the guest kernel in "${boot}": ${releases.length} kernels with an initrd`,
    );
  }
  return releases[0]!;
}

/** Writes one of gangway's files into the tree (replacing what is there). */
async function addFile(root: string, file: ImageFile): Promise<void> {
  const path = join(root, file.path);
  await Deno.mkdir(dirname(path), { recursive: true });
  await Deno.remove(path).catch((error) => {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  });
  if (file.kind === "symlink") {
    await Deno.symlink(file.target, path);
  } else {
    await Deno.writeTextFile(path, file.text);
    await Deno.chmod(path, file.mode);
  }
}
