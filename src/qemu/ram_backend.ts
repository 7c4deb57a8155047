/**
 * Finds a running guest's RAM file and size through QMP (Deno may not
 * look into /proc or /dev without --allow-all, and QEMU knows anyway).
 *
 * @module
 */
import type { QmpClient } from "./qmp.ts";

/** A guest's file-backed RAM. */
export interface RamBackend {
  /** The memory backend's id. */
  id: string;
  /** Its file (`mem-path`). */
  path: string;
  /** Its size in bytes. */
  size: number;
  /** True when mapped shared (`share=on`), so the file is the guest's RAM. */
  shared: boolean;
}

interface Memdev {
  id?: string;
  size: number;
  share: boolean;
}

/**
 * Asks QEMU for its memory backend (`query-memdev`) and the backend's file
 * (`qom-get` of `mem-path`). Without `backendId`, the guest must have
 * exactly one backend.
 *
 * @throws Error naming the guest when the backend is missing, ambiguous or
 * not file-backed
 *
 * @example
 * ```ts
 * import { queryRam } from "./ram_backend.ts";
 * import type { QmpClient } from "./qmp.ts";
 *
 * declare const qmp: QmpClient;
 * const { path, size } = await queryRam(qmp, "gangway-ram");
 * console.log(`${path}: ${size} bytes`);
 * ```
 */
export async function queryRam(qmp: QmpClient, backendId?: string): Promise<RamBackend> {
  const what = `Cannot find the RAM file of guest "${qmp.guest}"`;
  const memdevs = await qmp.execute<Memdev[]>("query-memdev");
  const found = backendId === undefined
    ? (memdevs.length === 1 ? memdevs[0] : undefined)
    : memdevs.find((m) => m.id === backendId);
  if (!found?.id) {
    const ids = memdevs.map((m) => m.id ?? "?").join(", ") || "none";
    throw new Error(
      `${what}: no backend ${backendId ? `"${backendId}"` : "to choose"} (has ${ids})`,
    );
  }
  let path: string;
  try {
    path = await qmp.execute<string>("qom-get", {
      path: `/objects/${found.id}`,
      property: "mem-path",
    });
  } catch (error) {
    throw new Error(`${what}: backend "${found.id}" is not file-backed (${error})`);
  }
  return { id: found.id, path, size: found.size, shared: found.share };
}
