/**
 * Auto-converge for a gang of QEMU guests: when the live rounds stop
 * shrinking (the guests write pages as fast as the rounds send them), the
 * guests' CPU is throttled step by step ({@linkcode nextThrottle}, QEMU's
 * steps), so that they write less and the final rounds, which the guests
 * wait for paused, stay short. A guest runs at full speed again as soon
 * as it is paused for its final round, and every guest does when the
 * migration ends, however it ends.
 *
 * @module
 */
import type { QemuGuest } from "./qemu/guest.ts";
import { CpuThrottle } from "./qemu/cpu_throttle.ts";
import { checkThrottleSteps, nextThrottle, type ThrottleSteps } from "./plan/convergence.ts";
import { errorMessage } from "./_errors.ts";

/** A gang's guests, slowed down while the rounds stall. */
export class AutoConverge implements AsyncDisposable {
  readonly #throttle: CpuThrottle;
  readonly #steps: ThrottleSteps;
  readonly #say: (text: string) => void;
  #failed = false;
  /** Processes said to be left alone. */
  readonly #toldOf = new Set<number>();

  private constructor(throttle: CpuThrottle, steps: ThrottleSteps, say: (text: string) => void) {
    this.#throttle = throttle;
    this.#steps = steps;
    this.#say = say;
  }

  /**
   * Readies the guests' throttle (nothing is slowed yet).
   *
   * @throws RangeError for steps that never reach their most
   * @throws Error when their CPU cannot be throttled here (no cgroup cpu controller, not root)
   */
  static async start(
    guests: readonly QemuGuest[],
    steps: ThrottleSteps,
    say: (text: string) => void = () => {},
  ): Promise<AutoConverge> {
    checkThrottleSteps(steps);
    const throttle = await CpuThrottle.start(
      guests.map((guest) => ({ pid: guest.pid, cpus: guest.machine.cpus })),
    );
    return new AutoConverge(throttle, steps, say);
  }

  /**
   * Slows the guests one step more (`transferGang`'s `slowGuests`): the
   * share of their CPU time now held back, or undefined when they are as
   * slow as allowed, or cannot be slowed (said, and not tried again: the
   * rounds then end as they would without).
   */
  slowGuests = async (): Promise<number | undefined> => {
    const next = this.#failed ? undefined : nextThrottle(this.#throttle.level, this.#steps);
    if (next === undefined) return undefined;
    let slowed: number;
    try {
      slowed = await this.#throttle.slow(next);
    } catch (error) {
      this.#failed = true;
      this.#say(`Cannot slow the guests down: ${errorMessage(error)}`);
      return undefined;
    }
    for (const { pid, reason } of this.#throttle.leftAlone) {
      if (this.#toldOf.has(pid)) continue;
      this.#toldOf.add(pid);
      this.#say(`Leaving the guest of QEMU process ${pid} unthrottled: ${reason}`);
    }
    if (slowed === 0) {
      // Nothing to slow (every guest idle, exited or left alone): the rounds end as without.
      this.#say("The rounds stopped shrinking, and no busy guest can be slowed");
      return undefined;
    }
    this.#say(
      `The rounds stopped shrinking: ${slowed} busy guests now get at most ${
        Math.round((1 - next) * 100)
      }% of the CPU time they used`,
    );
    return next;
  };

  /** Lets a guest run at full speed again (it is paused for its final round). */
  async release(guest: number): Promise<void> {
    await this.#throttle.release(guest).catch((error) =>
      this.#say(`Cannot let guest ${guest + 1} run at full speed: ${errorMessage(error)}`)
    );
  }

  /** Lets every guest run at full speed again (never throws: a failure is said). */
  async end(): Promise<void> {
    await this.#throttle.end().catch((error) => this.#say(errorMessage(error)));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.end();
  }
}
