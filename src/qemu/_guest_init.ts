/**
 * The heartbeat every gangway guest runs, the busybox image's `/init`
 * around it, and the kernel arguments that choose the workload. The
 * scripts are part of the images' cache keys: edit one and the next
 * {@linkcode ensureGuestImage} builds a new initramfs or Debian image.
 *
 * @module
 */

/**
 * The heartbeat every gangway guest runs, busybox or Debian (POSIX sh:
 * busybox ash and dash both run it). It works in the current directory,
 * which must be a RAM file system (so the blob lives in guest RAM): it
 * fills `blob` with random bytes, then prints `gangway-heartbeat COUNTER
 * checksum-STATUS CHECKS` about once a second while a second loop re-checks
 * the blob's md5 every few seconds. In `busy` mode a third loop keeps
 * rewriting `scratch` so pages keep changing. The heartbeat runs in the
 * foreground and never ends. It prints `gangway-ready` once, at its start:
 * a second one in a log means the guest booted again.
 */
export const HEARTBEAT_SCRIPT = `mode=idle blob_mib=16 scratch_mib=8 check_every=3
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    gangway.mode=*) mode=\${arg#*=} ;;
    gangway.blob_mib=*) blob_mib=\${arg#*=} ;;
    gangway.scratch_mib=*) scratch_mib=\${arg#*=} ;;
    gangway.check_every=*) check_every=\${arg#*=} ;;
  esac
done

dd if=/dev/urandom of=blob bs=1M count="$blob_mib" 2>/dev/null
sum=$(md5sum blob)
sum=\${sum%% *}
echo "checksum-pending 0" >status
echo "gangway-ready mode=$mode blob_mib=$blob_mib md5=$sum"

checks=0
while :; do
  sleep "$check_every"
  now=$(md5sum blob)
  checks=$((checks + 1))
  if [ "\${now%% *}" = "$sum" ]; then result=ok; else result=bad; fi
  echo "checksum-$result $checks" >status.new
  mv status.new status
done &

if [ "$mode" = busy ]; then
  while :; do
    dd if=/dev/urandom of=scratch bs=1M count="$scratch_mib" 2>/dev/null
  done &
fi

count=0
while :; do
  count=$((count + 1))
  read -r status <status
  echo "gangway-heartbeat $count $status"
  sleep 1
done
`;

/**
 * The busybox guest's init: it mounts what the heartbeat needs, sends its
 * output to the console and runs {@linkcode HEARTBEAT_SCRIPT} in `/` (the
 * initramfs, a RAM file system). Init must never exit, and the heartbeat
 * never does.
 */
export const INIT_SCRIPT = `#!/bin/sh
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
cd /

${HEARTBEAT_SCRIPT}`;

/**
 * What the guest does besides its heartbeat: `idle` nothing, `busy`
 * rewrite memory, `pgbench` run PostgreSQL's pgbench against a local
 * PostgreSQL, `web` drive a local nginx with wrk, `disk` write a file a
 * second to the guest's disk and read an earlier one back from it (what a
 * copied disk must keep: Debian images only, not a lab workload). `pgbench`
 * and `web` need an image that has those programs (`debian-db`, `debian-web`).
 */
export type WorkloadMode = "idle" | "busy" | "pgbench" | "web" | "disk";

/** Every workload mode, in the order the lab lists them. */
export const WORKLOAD_MODES: readonly WorkloadMode[] = ["idle", "busy", "pgbench", "web"];

/** The guest workload, passed on the kernel command line. */
export interface Workload {
  /** What runs besides the heartbeat (see {@linkcode WorkloadMode}). Default `idle`. */
  mode?: WorkloadMode;
  /** Size of the checksummed random blob in MiB. Default 16. */
  blobMiB?: number;
  /** Size of the scratch file rewritten in `busy` mode, in MiB. Default 8. */
  scratchMiB?: number;
  /** Seconds between two checksum checks. Default 3. */
  checkEverySeconds?: number;
}

/** Kernel arguments that select a workload. */
export function workloadArgs(workload: Workload = {}): string[] {
  const args = [`gangway.mode=${workload.mode ?? "idle"}`];
  if (workload.blobMiB !== undefined) args.push(`gangway.blob_mib=${whole(workload.blobMiB)}`);
  if (workload.scratchMiB !== undefined) {
    args.push(`gangway.scratch_mib=${whole(workload.scratchMiB)}`);
  }
  if (workload.checkEverySeconds !== undefined) {
    args.push(`gangway.check_every=${whole(workload.checkEverySeconds)}`);
  }
  return args;
}

function whole(value: number): number {
  if (!Number.isInteger(value) || value < 0) {
    throw new RangeError(`Cannot set the guest workload: ${value} is not a whole number`);
  }
  return value;
}
