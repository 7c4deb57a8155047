/**
 * The switch-over of a gang whose RAM is already at the target: QEMU moves
 * only device state, every destination is checked and started, every
 * source quits. {@linkcode switchOverGang} is the last step of
 * `migrateQemuGang` (src/gang_migration.ts); a script that moves the RAM
 * its own way calls it directly.
 *
 * Importing this module starts nothing and needs no permission.
 *
 * @example Switch two guests over once their RAM files are at the target
 * ```ts
 * import { checkDestinationsReady, switchOverGang } from "./mod.ts";
 * import { localDestination, QemuGuest } from "../qemu/mod.ts";
 *
 * const source = await QemuGuest.attach("/run/vm1.qmp");
 * const destination = await QemuGuest.startDestination(source.machine, { name: "vm1-b" });
 * const pairs = [{ source, destination: localDestination(destination) }];
 * await checkDestinationsReady(pairs.map((pair) => pair.destination));
 * // ... copy the RAM with the source paused ...
 * const results = await switchOverGang(pairs);
 * console.log(results.map((result) => result.ok));
 * ```
 *
 * @module
 */
export {
  checkDestinationsReady,
  switchOverGang,
  type SwitchOverOptions,
  type SwitchOverPair,
  type SwitchOverResult,
  watchDestinations,
} from "./switch_over.ts";
export { type DiskCopyOptions, GangDiskCopy } from "./disk_copy.ts";
export type { DowntimeParts } from "../qemu/downtime_parts.ts";
