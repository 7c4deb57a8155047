/**
 * The guest kernel: Debian's 6.1 `vmlinuz`, fetched with `apt-get download`
 * (no installation) and kept in the cache directory.
 *
 * @module
 */
import { join } from "node:path";
import { aptGet, isRoot } from "./_packages.ts";
import { run } from "./_run.ts";

/** A cached kernel. */
export interface Kernel {
  /** Path of the `vmlinuz`. */
  kernel: string;
  /** Kernel release, e.g. `6.1.0-56-amd64`. */
  kernelVersion: string;
}

/** The Debian metapackage whose dependency names the current kernel package. */
const KERNEL_METAPACKAGE = "linux-image-amd64";
const KERNEL_FILE = /^vmlinuz-(6\.1\.0-(\d+)-amd64)$/;

/** The newest kernel in `dir`, downloaded there first when there is none. */
export async function ensureKernel(dir: string): Promise<Kernel> {
  return await findKernel(dir) ?? await downloadKernel(dir);
}

/** The newest cached kernel, if any. */
async function findKernel(dir: string): Promise<Kernel | undefined> {
  let best: { abi: number; version: string; name: string } | undefined;
  for await (const entry of Deno.readDir(dir)) {
    const match = entry.isFile ? KERNEL_FILE.exec(entry.name) : null;
    if (!match) continue;
    const abi = Number(match[2]);
    if (!best || abi > best.abi) best = { abi, version: match[1]!, name: entry.name };
  }
  return best && { kernel: join(dir, best.name), kernelVersion: best.version };
}

/** The kernel package the metapackage currently depends on. */
async function kernelPackage(): Promise<string> {
  const find = async () => {
    const text = await run("apt-cache", ["depends", KERNEL_METAPACKAGE]).catch(() => "");
    return /Depends: (linux-image-6\.1\.0-\d+-amd64)\b/.exec(text)?.[1];
  };
  let name = await find();
  if (name === undefined && isRoot()) {
    await aptGet(["update", "-qq"]);
    name = await find();
  }
  if (name === undefined) {
    throw new Error(
      `Cannot provision the guest kernel: apt knows no ${KERNEL_METAPACKAGE} ` +
        "(run apt-get update as root)",
    );
  }
  return name;
}

/** Downloads the kernel package and keeps only its vmlinuz. */
async function downloadKernel(dir: string): Promise<Kernel> {
  const name = await kernelPackage();
  const tmp = await Deno.makeTempDir({ dir, prefix: ".kernel-" });
  try {
    await run("apt-get", ["download", "-qq", name], { cwd: tmp });
    const deb = await findDeb(tmp);
    if (!deb) {
      throw new Error(`Cannot provision the guest kernel: apt-get download ${name} gave no .deb`);
    }
    await extractBoot(join(tmp, deb), tmp);
    const version = name.replace(/^linux-image-/, "");
    const target = join(dir, `vmlinuz-${version}`);
    await Deno.rename(join(tmp, "boot", `vmlinuz-${version}`), target);
    return { kernel: target, kernelVersion: version };
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
}

async function findDeb(dir: string): Promise<string | undefined> {
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isFile && entry.name.endsWith(".deb")) return entry.name;
  }
  return undefined;
}

/** Unpacks only ./boot/vmlinuz-* of a .deb (the modules are not needed). */
async function extractBoot(deb: string, into: string): Promise<void> {
  const dpkg = new Deno.Command("dpkg-deb", {
    args: ["--fsys-tarfile", deb],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const tar = new Deno.Command("tar", {
    args: ["-x", "-C", into, "--wildcards", "./boot/vmlinuz-*"],
    stdin: "piped",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const [, dpkgStatus, dpkgErr, tarStatus, tarErr] = await Promise.all([
    dpkg.stdout.pipeTo(tar.stdin),
    dpkg.status,
    new Response(dpkg.stderr).text(),
    tar.status,
    new Response(tar.stderr).text(),
  ]);
  if (!dpkgStatus.success || !tarStatus.success) {
    const why = dpkgStatus.success ? `tar failed: ${tarErr}` : `dpkg-deb failed: ${dpkgErr}`;
    throw new Error(`Cannot unpack the guest kernel "${deb}": ${why.trim()}`);
  }
}
