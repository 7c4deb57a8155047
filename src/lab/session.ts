/**
 * A lab session: the two hosts (a {@linkcode LabNetwork}), the guest image,
 * the run's directories, and everything the run starts, so that it can all
 * be ended and removed at the end, after a failure, or on Ctrl-C.
 *
 * @module
 */
import { join } from "node:path";
import { ensureGuestImage, type GuestImage, type ImageName } from "../qemu/guest_image.ts";
import type { QemuGuest } from "../qemu/guest.ts";
import { makeDir, removeTree, removeTreeSync } from "./_files.ts";
import { HugePageTmpfs } from "./huge_tmpfs.ts";
import {
  killAndWait,
  killQuietly,
  namespacePids,
  namespacePidsSync,
  qemuPidsNamed,
} from "./_processes.ts";
import { cleanStaleLabs, labRunNames, liveLabRuns } from "./stale_runs.ts";
import { parseRate } from "./link_rate.ts";
import { type LabMode, LabNetwork, type LabSide } from "./netns.ts";
import { exitOnSignal } from "./netns_signal.ts";
import { errorMessage } from "../_errors.ts";

/** Options of {@linkcode LabSession.open}. */
export interface LabSessionOptions {
  /** Rate of the link, as tc writes it ("1gbit", "100mbit", "none"). Default "1gbit". */
  link?: string;
  /** "netns" (or fail), "loopback", or "auto": namespaces when they can be made. Default "auto". */
  network?: "auto" | LabMode;
  /** The busybox guest image. Default: `ensureGuestImage()`. */
  image?: GuestImage;
  /**
   * Images to provision before anything else (a Debian image not in the
   * cache is built then, with progress). Others are provisioned when a gang
   * first needs them. Default `["busybox"]`.
   */
  images?: ImageName[];
  /** Where progress lines go. Default: stderr, prefixed "lab: ". */
  onProgress?: (line: string) => void;
  /**
   * End the session's processes and remove its files on SIGINT, SIGTERM or
   * SIGHUP, then exit (see `exitOnSignal`). Default true.
   */
  handleSignals?: boolean;
}

/** Goodput of TCP over an Ethernet link, as a share of its nominal rate (941 of 1000 Mbit/s). */
const TCP_GOODPUT_SHARE = 0.941;
/** How long a child process gets to end after SIGTERM before SIGKILL. */
const CHILD_GRACE_MS = 3_000;

/**
 * Everything one lab run owns. Open it, boot guests and migrate them with
 * the functions of src/lab (or `runLab`), then close it: closing ends every
 * process the run started (QEMUs, the gang runner, receivers: in
 * namespace mode, everything inside its namespaces), removes its RAM files
 * and logs, and removes the namespaces. A run killed outright (SIGKILL)
 * leaves them for the next session, which removes those of dead runs.
 *
 * Requires `--allow-run` (ip, tc, QEMU, deno, mkdir, rm, ps), `--allow-read`,
 * `--allow-write` and `--allow-env` (the guest image cache, run directory),
 * and root for namespaces.
 *
 * @example
 * ```ts
 * await using lab = await LabSession.open({ link: "1gbit" });
 * console.error(lab.network.describe());
 * ```
 */
export class LabSession implements AsyncDisposable {
  /** The run's id: this process's pid and 32 random bits. */
  readonly id: string;
  /** The link rate asked for. */
  readonly link: string;
  /** The two hosts. */
  readonly network: LabNetwork;
  /** The busybox guest image. */
  readonly image: GuestImage;
  /** The run's RAM files: `source/NAME` and `target/NAME`. */
  readonly ramDir: string;
  /**
   * The guests' disk overlays, storage both hosts share: a destination
   * opens its source's overlay there.
   */
  readonly diskDir: string;
  /** The run's QMP sockets and logs: `source/` and `target/`. */
  readonly runDir: string;
  readonly #say: (line: string) => void;
  readonly #children = new Set<Deno.ChildProcess>();
  readonly #guests = new Set<QemuGuest>();
  readonly #images = new Map<ImageName, Promise<GuestImage>>();
  #runs = 0;
  readonly #hugePages: HugePageTmpfs;
  #signals: Disposable | undefined;
  #closing: Promise<void> | undefined;
  readonly #closed = new AbortController();
  #exitGuard = () => this.#removeAtExit();

  private constructor(
    id: string,
    link: string,
    network: LabNetwork,
    image: GuestImage,
    runDir: string,
    say: (line: string) => void,
  ) {
    this.id = id;
    this.link = link;
    this.network = network;
    this.image = image;
    this.ramDir = labRunNames.ramDir(id);
    this.diskDir = join(this.ramDir, "disks");
    this.#hugePages = new HugePageTmpfs(join(this.ramDir, "source-huge"), say);
    this.#images.set("busybox", Promise.resolve(image));
    this.runDir = runDir;
    this.#say = say;
    globalThis.addEventListener("unload", this.#exitGuard);
  }

  /**
   * Provisions the guest image, removes what crashed runs left behind,
   * makes the network and the run's directories. Refuses to start while
   * another process's lab run is running on this host.
   *
   * Requires `--allow-run`, `--allow-read`, `--allow-write`, `--allow-env`.
   *
   * @param options Link, network mode, image, progress, signals
   * @returns The session; close it when done
   * @throws Error when the link rate cannot be parsed, another lab run is
   * running, the image cannot be made, or (network "netns") the namespaces
   * cannot be made
   */
  static async open(options: LabSessionOptions = {}): Promise<LabSession> {
    const link = options.link ?? "1gbit";
    parseRate(link); // refuse a bad rate before doing anything
    // Before the image is built: two runs at once share the cores, the memory and the link's host.
    const [other] = await liveLabRuns();
    if (other) {
      throw new Error(
        `Cannot start a lab run: another one is running (process ${other.pid}, ${other.runDir}); ` +
          "two at once would disturb each other's measurements and share the memory: " +
          "wait for it to end, or stop it",
      );
    }
    const say = options.onProgress ?? ((line: string) => console.error(`lab: ${line}`));
    const image = options.image ?? await ensureGuestImage();
    const prebuilt = new Map<ImageName, GuestImage>();
    for (const name of new Set(options.images ?? [])) {
      if (name === "busybox") continue;
      prebuilt.set(name, await ensureGuestImage({ name, onProgress: (line) => say(line) }));
    }
    const removed = await cleanStaleLabs();
    if (removed > 0) say(`removed ${removed} leftovers of crashed lab runs`);
    const id = `${Deno.pid}-${randomHex()}`;
    // In the temporary directory, with a short name: a unix socket's path has 107 bytes.
    const runDir = await Deno.makeTempDir({ prefix: labRunNames.runDirPrefix(id) });
    let network: LabNetwork;
    try {
      network = await LabNetwork.create({ rate: link, mode: options.network ?? "auto" });
    } catch (error) {
      await Deno.remove(runDir, { recursive: true }).catch(() => {});
      throw error;
    }
    const session = new LabSession(id, link, network, image, runDir, say);
    for (const [name, built] of prebuilt) session.#images.set(name, Promise.resolve(built));
    if (options.handleSignals ?? true) {
      session.#signals = exitOnSignal(() => session.close());
    }
    try {
      for (const side of ["source", "target"] as const) {
        await makeDir(join(session.ramDir, side));
        await Deno.mkdir(join(runDir, side), { recursive: true });
      }
      await makeDir(session.diskDir);
    } catch (error) {
      await session.close();
      throw error;
    }
    return session;
  }

  /** Prints a progress line. */
  say(line: string): void {
    this.#say(line);
  }

  /**
   * The command prefix that runs a program on a host: `ip netns exec NS`,
   * or nothing in loopback mode.
   */
  prefix(side: LabSide): string[] | undefined {
    const namespace = this.network[side].namespace;
    return namespace === null ? undefined : ["ip", "netns", "exec", namespace];
  }

  /**
   * In loopback mode nothing shapes the link, so each method caps its own
   * bandwidth: this cap in bytes per second (TCP goodput of the link asked
   * for). Null in namespace mode or for an unshaped link.
   */
  get loopbackCap(): number | null {
    if (this.network.mode !== "loopback") return null;
    const bits = parseRate(this.link);
    return bits === null ? null : Math.round(bits / 8 * TCP_GOODPUT_SHARE);
  }

  /**
   * A guest image by name, provisioned on first use (a Debian image not in
   * the cache is built then, with progress).
   *
   * Requires what `ensureGuestImage` requires.
   */
  guestImage(name: ImageName): Promise<GuestImage> {
    let image = this.#images.get(name);
    if (!image) {
      image = ensureGuestImage({ name, onProgress: (line) => this.say(line) });
      image.catch(() => this.#images.delete(name)); // a failed build may be tried again
      this.#images.set(name, image);
    }
    return image;
  }

  /** Where a guest's disk overlay lives (storage shared by both hosts). */
  diskPath(name: string): string {
    return join(this.diskDir, `${name}.qcow2`);
  }

  /** A new number for each gang booted, so guest names are never reused. */
  nextRun(): number {
    return ++this.#runs;
  }

  /** A guest name unique to this run: `lab-ID-TAG-N`. */
  guestName(tag: string, index: number): string {
    return `${labRunNames.qemuPrefix(this.id)}${tag}-${index}`;
  }

  /** The directory of a host's RAM files. */
  hostRamDir(side: LabSide): string {
    return join(this.ramDir, side);
  }

  /**
   * The source host's directory of RAM files on a tmpfs of huge pages
   * (`HugePageTmpfs`), mounted on first use; undefined where none can be,
   * which is said once.
   *
   * Requires `--allow-run` (cat, mkdir, mount) and root.
   */
  hugePageRamDir(): Promise<string | undefined> {
    return this.#hugePages.dir();
  }

  /** Where a guest's RAM file lives on a host. */
  ramPath(side: LabSide, name: string): string {
    return join(this.ramDir, side, name);
  }

  /** The directory of a host's QMP sockets and logs. */
  hostRunDir(side: LabSide): string {
    return join(this.runDir, side);
  }

  /** True once {@linkcode close} was called (by the program or on a signal). */
  get closed(): boolean {
    return this.#closing !== undefined;
  }

  /**
   * Aborted once {@linkcode close} is called: what the run starts (QEMUs)
   * is not started after that, so that nothing outlives the close.
   */
  get signal(): AbortSignal {
    return this.#closed.signal;
  }

  /** Remembers a guest so that the session ends it if nobody else does. */
  track(guest: QemuGuest): QemuGuest {
    this.#guests.add(guest);
    if (this.#closing) void guest.kill().catch(() => {}); // started while closing
    return guest;
  }

  /** Forgets a guest that was closed. */
  forget(guest: QemuGuest): void {
    this.#guests.delete(guest);
  }

  /** Remembers a child process (ended with SIGTERM, then SIGKILL, if still running at close). */
  trackChild(child: Deno.ChildProcess): Deno.ChildProcess {
    this.#children.add(child);
    child.status.finally(() => this.#children.delete(child));
    return child;
  }

  /**
   * Ends every process of the run that still runs: child processes
   * (SIGTERM, then SIGKILL), tracked guests, everything inside the lab's
   * namespaces, and any QEMU with one of the run's guest names.
   *
   * Requires `--allow-run`.
   *
   * @returns How many processes were still running after the children's grace time
   */
  async endProcesses(): Promise<number> {
    const children = [...this.#children];
    for (const child of children) {
      try {
        child.kill("SIGTERM");
      } catch {
        // already gone
      }
    }
    await settledWithin(children.map((child) => child.status), CHILD_GRACE_MS);
    const pids = new Set<number>();
    for (const child of this.#children) pids.add(child.pid);
    for (const guest of this.#guests) if (guest.alive) pids.add(guest.pid);
    for (const side of ["source", "target"] as const) {
      const namespace = this.network[side].namespace;
      if (namespace !== null) { for (const pid of await namespacePids(namespace)) pids.add(pid); }
    }
    for (const pid of await qemuPidsNamed(labRunNames.qemuPrefix(this.id))) pids.add(pid);
    pids.delete(Deno.pid);
    const left = await killAndWait([...pids]);
    if (left.length > 0) throw new Error(`Cannot end processes ${left.join(", ")} of the lab run`);
    await Promise.allSettled([...this.#guests].map((guest) => guest.close()));
    this.#guests.clear();
    return pids.size;
  }

  /**
   * Between two measurements: ends whatever still runs and empties the RAM
   * and disk directories, so that the next gang starts from a clean host.
   *
   * Requires `--allow-run`.
   */
  async reset(): Promise<void> {
    if (this.#closing) return; // close() ends and removes everything anyway
    await this.endProcesses();
    for (const dir of [this.hostRamDir("source"), this.hostRamDir("target"), this.diskDir]) {
      await removeTree(dir);
      await makeDir(dir);
    }
    await this.#hugePages.empty();
  }

  /**
   * Ends the run's processes, removes its RAM files, logs and namespaces.
   * Safe to call twice.
   *
   * Requires `--allow-run`, `--allow-write`.
   *
   * @throws Error naming what could not be removed
   */
  close(): Promise<void> {
    this.#closed.abort(new Error("The lab session is closed"));
    this.#closing ??= this.#close();
    return this.#closing;
  }

  /** Closes the session: what `await using` calls. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #close(): Promise<void> {
    const problems: string[] = [];
    const attempt = async (what: () => Promise<unknown>) => {
      try {
        await what();
      } catch (error) {
        problems.push(errorMessage(error));
      }
    };
    await attempt(() => this.endProcesses());
    await this.#hugePages.close();
    await attempt(() => removeTree(this.ramDir));
    await attempt(() => Deno.remove(this.runDir, { recursive: true }));
    await attempt(() => this.network.close());
    this.#signals?.[Symbol.dispose]();
    globalThis.removeEventListener("unload", this.#exitGuard);
    if (problems.length > 0) {
      throw new Error(`Cannot clean up the lab run: ${problems.join("; ")}`);
    }
  }

  /** The process exits without closing: kill what is known, remove the files. */
  #removeAtExit(): void {
    const pids = [...this.#children].map((child) => child.pid);
    for (const guest of this.#guests) pids.push(guest.pid);
    for (const side of ["source", "target"] as const) {
      const namespace = this.network[side].namespace;
      if (namespace !== null) pids.push(...namespacePidsSync(namespace));
    }
    for (const pid of pids) if (pid !== Deno.pid) killQuietly(pid);
    removeTreeSync(this.ramDir);
    removeTreeSync(this.runDir);
  }
}

/** Waits until the promises have settled, or `ms` has passed. */
async function settledWithin(promises: Promise<unknown>[], ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    Promise.allSettled(promises),
    new Promise((resolve) => (timer = setTimeout(resolve, ms))),
  ]);
  clearTimeout(timer);
}

function randomHex(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(4));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}
