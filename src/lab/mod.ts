/**
 * The lab: two hosts on one machine (network namespaces joined by a shaped
 * veth link), gangs of QEMU guests booted on the source host, migrated to
 * the target host by gangway and by QEMU's own live migration, measured the
 * same way (bytes on the link, total migration time, downtime, guests that
 * resumed), and drawn as the paper's figures.
 *
 * Importing this module starts nothing and needs no permission.
 *
 * @example Gangway against QEMU on two guests
 * ```ts
 * import { DEFAULT_LAB_CONFIG, formatSummary, LabSession, runLab } from "./mod.ts";
 *
 * await using lab = await LabSession.open({ link: "1gbit" });
 * const result = await runLab(lab, { ...DEFAULT_LAB_CONFIG, guests: 2 });
 * console.log(formatSummary(result));
 * ```
 *
 * @module
 */

export { LabSession, type LabSessionOptions } from "./session.ts";
export {
  type BootedGang,
  bootGang,
  type BootOptions,
  closeGuests,
  type GangSpec,
  reportsWork,
} from "./gang_spec.ts";
export {
  type ApplicationView,
  applicationView,
  type AppWindow,
  type ArrivedLine,
  type SeriesPoint,
  type WindowFigures,
} from "./app_view.ts";
export {
  type LatencyReport,
  parseWorkloadLine,
  type WorkloadReport,
  type WorkReport,
} from "./app_lines.ts";
export { type FollowOptions, SerialRecorder } from "./serial_recorder.ts";
export { applicationChart } from "./app_plot.ts";
export { type DiskStorage, type GangwayMethodOptions, runGangwayMethod } from "./gangway_method.ts";
export type { CompressionMode, CompressionReport } from "../transfer/compression_policy.ts";
export type { LiveRoundsEnd } from "../plan/convergence.ts";
export type { DowntimeParts } from "../qemu/downtime_parts.ts";
export { type QemuMethodOptions, runQemuMethod } from "./qemu_method.ts";
export { checkResumed, type ResumeCheck } from "./resumed.ts";
export {
  type GangwayBreakdown,
  type GangwayDetails,
  type GuestRam,
  LAB_METHODS,
  type LabMethod,
  type MethodResult,
  type MigrationOutcome,
} from "./measurement.ts";
export {
  type ComparedMethod,
  DEFAULT_LAB_CONFIG,
  type LabConfig,
  type LabResult,
  refuseUnlessLabFits,
  runLab,
} from "./experiment.ts";
export { AFTER_SWITCHOVER_SECONDS, measureMethod, type MeasureOptions } from "./measure_method.ts";
export {
  type GoalVerdict,
  goalVerdicts,
  type LabJson,
  labJson,
  type MethodJson,
  methodKey,
  type Ratios,
  ratiosOf,
} from "./report.ts";
export {
  formatApplication,
  formatBreakdown,
  formatCompression,
  formatRatios,
  formatSummary,
  table,
} from "./summary.ts";
export {
  formatLostGuests,
  judgeLostGuests,
  knownQemuIssue,
  type LostGuest,
  lostGuests,
  type LostTotals,
  lostTotals,
  QEMU_TCG_DIRTY_FIX,
} from "./lost_guests.ts";
export {
  anonymousHugePages,
  availableMemory,
  estimateMemory,
  type HostMemory,
  hostMemory,
  type MemoryEstimate,
  type MemoryPlan,
  memoryToWarm,
  type MethodNeed,
  oomKillCount,
  refuseUnlessFits,
  residentBytes,
} from "./memory_budget.ts";
export { describeWarmed, type WarmedMemory, warmMemory } from "./warm_memory.ts";
export {
  runSweep,
  type SweepAxis,
  type SweepResult,
  sweepSummary,
  writeSweepFiles,
} from "./sweep.ts";
export {
  type LabHost,
  type LabMode,
  LabNetwork,
  type LabNetworkOptions,
  type LabSide,
  type LinkBytes,
  SOURCE_ADDRESS,
  TARGET_ADDRESS,
} from "./netns.ts";
export { type LinkShape, parseRate } from "./link_rate.ts";
export { exitOnSignal, type ExitOnSignalOptions, type SignalCleanup } from "./netns_signal.ts";
export {
  barChart,
  type ChartOptions,
  lineChart,
  type LineChartOptions,
  type PlotBand,
  type PlotPoint,
  type PlotSeries,
} from "./plot.ts";
// The QEMU layer's types that the lab's API shows (the layer itself: src/qemu/mod.ts).
export type {
  ChecksumStatus,
  CloseOptions,
  ExecuteOptions,
  GuestImage,
  GuestStatus,
  Heartbeat,
  KernelCrash,
  KernelCrashKind,
  QemuGuest,
  QemuMachine,
  QmpClient,
  QmpEvent,
  QmpListener,
  QmpVersion,
  RamBackend,
  WorkloadMode,
} from "../qemu/mod.ts";
