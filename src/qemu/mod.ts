/**
 * The QEMU control layer: the test guest image, guests with their RAM in a
 * shared file, QMP, and QEMU's own migrations (device state only, for gang
 * migration; and full, the baseline).
 *
 * Importing this module starts nothing and needs no permission.
 *
 * @example Move a guest's device state after copying its RAM while it is paused
 * ```ts
 * import { ensureGuestImage, localDestination, moveDeviceState, QemuGuest } from "./mod.ts";
 *
 * // Gangway's transfer, or any copy of the RAM file's pages.
 * declare function copyRam(from: string, to: string): Promise<void>;
 *
 * const image = await ensureGuestImage();
 * await using source = await QemuGuest.start({ name: "vm1", memoryMiB: 128, image });
 * await source.waitUntilBooted();
 * await using destination = await QemuGuest.startDestination(source.machine, { name: "vm1-b" });
 * const { downtimeMs } = await moveDeviceState(source, localDestination(destination), {
 *   whilePaused: () => copyRam(source.ramPath, destination.ramPath),
 * });
 * console.log(`downtime ${downtimeMs} ms`);
 * ```
 *
 * @module
 */

export { type CloseOptions, type GuestStatus, QemuGuest } from "./guest.ts";
export { defaultRamPath, type DestinationOptions, type QemuGuestOptions } from "./guest_launch.ts";
export {
  type DebianImageName,
  defaultCacheDir,
  ensureGuestImage,
  type GuestImage,
  type GuestImageOptions,
  type ImageName,
} from "./guest_image.ts";
export type { Workload, WorkloadMode } from "./_guest_init.ts";
export {
  type ChecksumStatus,
  type Heartbeat,
  parseHeartbeats,
  readHeartbeat,
  waitForHeartbeat,
  type WaitForHeartbeatOptions,
} from "./heartbeat.ts";
export {
  DeviceStateMigration,
  type DeviceStateMigrationOptions,
  moveDeviceState,
  type MoveDeviceStateOptions,
} from "./device_state.ts";
export { type DeviceStateMigrationResult, type DowntimeParts } from "./downtime_parts.ts";
export {
  type Destination,
  type DestinationState,
  localDestination,
  type LocalDestinationOptions,
  type RunWhenLoadedOptions,
} from "./destination.ts";
export {
  type QemuMigrationOptions,
  type QemuMigrationResult,
  runQemuMigration,
} from "./qemu_migration.ts";
export {
  driveId,
  qemuArgs,
  type QemuDisk,
  type QemuInstance,
  type QemuMachine,
} from "./qemu_args.ts";
export {
  diskExportName,
  DiskMirror,
  type DiskTarget,
  endDiskExports,
  exportDisks,
} from "./block_mirror.ts";
export { type ExecuteOptions, QmpClient, type QmpConnectOptions, type QmpListener } from "./qmp.ts";
export { QmpError, type QmpEvent, type QmpVersion } from "./qmp_messages.ts";
export { queryRam, type RamBackend } from "./ram_backend.ts";
export {
  findKernelCrash,
  type KernelCrash,
  type KernelCrashKind,
  readKernelCrash,
} from "./kernel_crash.ts";
export { findQemuProcess, findQemus, type FoundQemu, type UnusableQemu } from "./discover.ts";
export {
  type CpuHierarchy,
  CpuThrottle,
  findCpuHierarchy,
  MOST_THROTTLE,
  type ThrottledProcess,
} from "./cpu_throttle.ts";
export { parseCommandLine, type ParsedCommandLine } from "./qemu_command_line.ts";
