/**
 * What QEMU says over QMP, one JSON object a line: the greeting with its
 * version, events, and error answers to commands.
 *
 * @module
 */

/** An asynchronous event sent by QEMU (STOP, RESUME, MIGRATION, SHUTDOWN...). */
export interface QmpEvent {
  /** Event name, e.g. `STOP`. */
  event: string;
  /** Event data (empty object when QEMU sends none). */
  data: Record<string, unknown>;
  /** QEMU's wall-clock timestamp of the event, in ms since the epoch. */
  timestampMs: number;
  /** When this client read it, on the `performance.now()` clock. */
  receivedAt: number;
}

/** QEMU's version from the greeting. */
export interface QmpVersion {
  /** Major version, e.g. 7. */
  major: number;
  /** Minor version, e.g. 2. */
  minor: number;
  /** Micro version, e.g. 22. */
  micro: number;
  /** Distribution suffix, e.g. `Debian 1:7.2+dfsg-7+deb12u18+b3`. */
  package: string;
}

/** An error answer from QEMU to a command. */
export class QmpError extends Error {
  /** The command that failed. */
  readonly command: string;
  /** The guest it was sent to. */
  readonly guest: string;
  /** QEMU's error class, e.g. `GenericError`. */
  readonly errorClass: string;
  /** QEMU's description. */
  readonly description: string;

  /**
   * Builds the error from QEMU's answer.
   *
   * @param guest The guest's name
   * @param command The command QEMU refused
   * @param errorClass QEMU's error class
   * @param description QEMU's description
   */
  constructor(guest: string, command: string, errorClass: string, description: string) {
    super(`Cannot run "${command}" on guest "${guest}": ${description}`);
    this.name = "QmpError";
    this.guest = guest;
    this.command = command;
    this.errorClass = errorClass;
    this.description = description;
  }
}

/** QEMU's version, from its greeting (`{"QMP": {"version": ...}}`). */
export function greetingVersion(message: Record<string, unknown>): QmpVersion {
  const qmp = message.QMP as {
    version?: { qemu?: Omit<QmpVersion, "package">; package?: string };
  };
  const { major = 0, minor = 0, micro = 0 } = qmp.version?.qemu ?? {};
  return { major, minor, micro, package: qmp.version?.package?.trim() ?? "" };
}

/** An event message, read now. */
export function toEvent(message: Record<string, unknown>): QmpEvent {
  const stamp = message.timestamp as { seconds?: number; microseconds?: number } | undefined;
  return {
    event: String(message.event),
    data: (message.data as Record<string, unknown> | undefined) ?? {},
    timestampMs: (stamp?.seconds ?? 0) * 1000 + (stamp?.microseconds ?? 0) / 1000,
    receivedAt: performance.now(),
  };
}
