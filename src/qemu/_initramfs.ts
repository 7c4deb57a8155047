/**
 * The guest initramfs: a static busybox and the heartbeat `/init`, named
 * by a hash of both so that a new script gives a new file.
 *
 * @module
 */
import { join } from "node:path";
import { writeCpio } from "./_cpio.ts";

/** Bump when the archive layout changes (the script and busybox are hashed anyway). */
const IMAGE_FORMAT = "gangway-initramfs-1";

/**
 * Returns the path of the initramfs for this busybox and init script in
 * `dir`, building it unless a file with the same content hash exists.
 */
export async function ensureInitramfs(
  dir: string,
  busyboxPath: string,
  initScript: string,
): Promise<string> {
  const busybox = await Deno.readFile(busyboxPath).catch((error) => {
    throw new Error(`Cannot build the guest initramfs: cannot read "${busyboxPath}": ${error}`);
  });
  if (isDynamic(busybox)) {
    throw new Error(
      `Cannot build the guest initramfs: "${busyboxPath}" is dynamically linked ` +
        "(install busybox-static)",
    );
  }
  const target = join(dir, await initramfsName(busybox, initScript));
  try {
    await Deno.stat(target);
    return target;
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  await writeAtomically(dir, target, initramfs(busybox, initScript));
  return target;
}

/** The file name of an initramfs: `initramfs-HASH.cpio`, HASH of everything in it. */
export async function initramfsName(busybox: Uint8Array, initScript: string): Promise<string> {
  return `initramfs-${await contentKey([IMAGE_FORMAT, initScript, busybox])}.cpio`;
}

/** The archive: busybox as /bin/sh, the script as /init, and /dev/console for its output. */
export function initramfs(busybox: Uint8Array, initScript: string): Uint8Array {
  return writeCpio([
    ...["bin", "dev", "proc", "sys", "tmp"].map((path) => ({ kind: "dir" as const, path })),
    { kind: "chardev", path: "dev/console", major: 5, minor: 1 },
    { kind: "file", path: "bin/busybox", data: busybox, mode: 0o755 },
    { kind: "symlink", path: "bin/sh", target: "busybox" },
    { kind: "file", path: "init", data: new TextEncoder().encode(initScript), mode: 0o755 },
  ]);
}

/** Writes under a temporary name and renames: concurrent builders never see half a file. */
async function writeAtomically(dir: string, target: string, data: Uint8Array): Promise<void> {
  const tmp = await Deno.makeTempFile({ dir, prefix: ".initramfs-" });
  try {
    await Deno.writeFile(tmp, data);
    await Deno.chmod(tmp, 0o644);
    await Deno.rename(tmp, target);
  } catch (error) {
    await Deno.remove(tmp).catch(() => {});
    throw error;
  }
}

/** First 16 hex digits of the SHA-256 of the parts, each prefixed by its length. */
async function contentKey(parts: (string | Uint8Array)[]): Promise<string> {
  const bytes = parts.map((p) => typeof p === "string" ? new TextEncoder().encode(p) : p);
  const all = new Uint8Array(bytes.reduce((sum, b) => sum + 8 + b.length, 0));
  const view = new DataView(all.buffer);
  let offset = 0;
  for (const b of bytes) {
    view.setBigUint64(offset, BigInt(b.length), true);
    all.set(b, offset + 8);
    offset += 8 + b.length;
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
  return [...digest.slice(0, 8)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** True when an ELF executable asks for a program interpreter (PT_INTERP). */
function isDynamic(elf: Uint8Array): boolean {
  const view = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  const PT_INTERP = 3;
  if (elf.length < 64 || view.getUint32(0) !== 0x7f454c46) return false;
  const phoff = Number(view.getBigUint64(0x20, true));
  const phentsize = view.getUint16(0x36, true);
  const phnum = view.getUint16(0x38, true);
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (at + 4 <= elf.length && view.getUint32(at, true) === PT_INTERP) return true;
  }
  return false;
}
