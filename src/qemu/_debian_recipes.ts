/**
 * What goes into each Debian guest image: the packages `mmdebstrap`
 * installs, and the files gangway adds (the heartbeat and workload units,
 * masks for what would only add noise). A recipe's key hashes all of it,
 * so that editing a recipe or a script gives a new image in the cache.
 *
 * @module
 */
import { HEARTBEAT_SCRIPT, type WorkloadMode } from "./_guest_init.ts";

/** The Debian guest images. */
export type DebianImageName = "debian" | "debian-cloud" | "debian-rt" | "debian-db" | "debian-web";

/** One Debian image: a kernel flavour and the packages on top of the base. */
export interface DebianRecipe {
  /** The image's name. */
  name: DebianImageName;
  /** The kernel metapackage: Debian's standard, cloud or RT kernel. */
  kernelPackage: string;
  /** Packages besides the base system and the kernel. */
  packages: readonly string[];
  /** The workloads its programs can run. */
  workloads: readonly WorkloadMode[];
}

/** A file or symbolic link gangway adds to the tree `mmdebstrap` made. */
export type ImageFile =
  | { kind: "file"; path: string; text: string; mode: number }
  | { kind: "symlink"; path: string; target: string };

/** Debian 12, the release the host's QEMU and guest kernel come from. */
export const DEBIAN_SUITE = "bookworm";
/** Enough for systemd to boot a kernel with its initrd from a virtio disk. */
const BASE_PACKAGES = ["systemd-sysv", "udev", "initramfs-tools"];
/** Bump when the way an image is made changes (not its recipe: that is hashed). */
const BUILD_FORMAT = "gangway-debian-image-1";

const BASIC: readonly WorkloadMode[] = ["idle", "busy", "disk"];

/** Every Debian image, by name. */
export const DEBIAN_RECIPES: Readonly<Record<DebianImageName, DebianRecipe>> = {
  debian: { name: "debian", kernelPackage: "linux-image-amd64", packages: [], workloads: BASIC },
  "debian-cloud": {
    name: "debian-cloud",
    kernelPackage: "linux-image-cloud-amd64",
    packages: [],
    workloads: BASIC,
  },
  "debian-rt": {
    name: "debian-rt",
    kernelPackage: "linux-image-rt-amd64",
    packages: [],
    workloads: BASIC,
  },
  "debian-db": {
    name: "debian-db",
    kernelPackage: "linux-image-amd64",
    packages: ["postgresql-15"],
    workloads: [...BASIC, "pgbench"],
  },
  "debian-web": {
    name: "debian-web",
    kernelPackage: "linux-image-amd64",
    packages: ["nginx", "wrk"],
    workloads: [...BASIC, "web"],
  },
};

/** The arguments of `mmdebstrap` that build a recipe's tree into `dir`. */
export function mmdebstrapArgs(recipe: DebianRecipe, dir: string): string[] {
  const packages = [...BASE_PACKAGES, recipe.kernelPackage, ...recipe.packages];
  return ["--variant=minbase", `--include=${packages.join(",")}`, DEBIAN_SUITE, dir];
}

/** Runs the heartbeat in a RAM directory, so that its blob lives in guest RAM. */
const HEARTBEAT_PROGRAM = `#!/bin/sh
mkdir -p /run/gangway
cd /run/gangway

${HEARTBEAT_SCRIPT}`;

/**
 * Runs the workload `gangway.mode` names, when it needs more than the
 * heartbeat: pgbench against the local PostgreSQL, or wrk against the
 * local nginx, one report of completed work a second on the console (the
 * lab's application view reads them: src/lab/app_lines.ts); or the disk
 * writer (see `disk` below). It prints
 * `gangway-workload MODE running` once the load runs (or `failed`).
 *
 * - pgbench: its own progress line each second (`-P 1`, stamped with the
 *   guest's clock by `--progress-timestamp`: transactions per second and
 *   mean latency), and from its per-transaction log (`-l`, onto its
 *   terminal, so nothing grows in the guest) the p99 latency of each
 *   second of the guest's clock, by gangway-latency.
 * - web: wrk in one-second runs against `127.0.0.1:80` (the port is
 *   written out: a minbase image has no /etc/services, and wrk cannot
 *   resolve "http" without it), one line per run with its p99 from wrk's
 *   own latency histogram, stamped with the guest's clock.
 */
const WORKLOAD_PROGRAM = `#!/bin/sh
mode=idle scale=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    gangway.mode=*) mode=\${arg#*=} ;;
    gangway.pgbench_scale=*) scale=\${arg#*=} ;;
  esac
done
fail() {
  echo "gangway-workload $mode failed: $1"
  exit 1
}
pg=/usr/lib/postgresql/15/bin
case "$mode" in
  pgbench)
    [ -x "$pg/pgbench" ] || fail "no pgbench in this image"
    # About 15 MB of tables per scale unit: an eighth of the guest's RAM,
    # so the database fits in memory as on a well-sized server.
    if [ -z "$scale" ]; then
      while read -r key kib _; do [ "$key" = MemTotal: ] && break; done </proc/meminfo
      scale=$((kib / 1024 / 128))
      [ "$scale" -ge 1 ] || scale=1
    fi
    until runuser -u postgres -- "$pg/pg_isready" -q; do sleep 1; done
    runuser -u postgres -- "$pg/createdb" gangway || fail "createdb"
    runuser -u postgres -- "$pg/pgbench" -i -q -s "$scale" gangway >/dev/null 2>&1 || fail "pgbench -i"
    logs=/run/gangway-pgbench
    mkdir -p "$logs" && chown postgres "$logs"
    echo "gangway-workload pgbench running scale=$scale"
    # A terminal (script's) for pgbench: stdio flushes its per-transaction
    # log there at each line.
    runuser -u postgres -- script -qfec "/usr/local/sbin/gangway-pgbench $logs" /dev/null |
      /usr/local/sbin/gangway-latency
    ;;
  disk)
    # A file a second on the guest's own disk, synced; then, with the page
    # cache dropped, the one written two files before is read back from the
    # disk itself. A disk that lost writes (a copy that missed them) shows as
    # a "read" checksum that differs from its "wrote" one.
    dir=/var/lib/gangway-disk
    mkdir -p "$dir" || fail "mkdir $dir"
    echo "gangway-workload disk running"
    i=0
    while :; do
      i=$((i + 1))
      head -c 262144 /dev/urandom >"$dir/$i"
      sync "$dir/$i"
      sum=$(md5sum <"$dir/$i")
      echo "gangway-disk wrote $i \${sum%% *}"
      echo 3 >/proc/sys/vm/drop_caches
      j=$((i - 2))
      if [ "$j" -ge 1 ]; then
        sum=$(md5sum <"$dir/$j")
        echo "gangway-disk read $j \${sum%% *}"
      fi
      sleep 1
    done
    ;;
  web)
    command -v wrk >/dev/null || fail "no wrk in this image"
    head -c 65536 /dev/urandom >/var/www/html/gangway-64k.bin
    until systemctl -q is-active nginx; do sleep 1; done
    echo "gangway-workload web running file=64k"
    while :; do
      report=$(wrk -t1 -c4 -d1s -s /usr/local/share/gangway/wrk-report.lua \\
        http://127.0.0.1:80/gangway-64k.bin 2>&1 | grep '^gangway-web ')
      if [ -n "$report" ]; then
        echo "$report clock=$(date +%s.%N)"
      else
        echo "gangway-web failed: wrk gave no report"
        sleep 1
      fi
    done
    ;;
esac
`;

/**
 * Runs pgbench without end on its terminal: its progress each second
 * (stderr), and its per-transaction log, which pgbench writes to
 * PREFIX.PID: a link to /dev/tty made under that name just before exec,
 * which keeps the PID. On a terminal stdio flushes the log at each line;
 * into a file or a FIFO it would come 4 KiB at a time, a dozen seconds
 * late at the rate of a guest under TCG.
 */
const PGBENCH_PROGRAM = `#!/bin/sh
logs=$1
ln -sf /dev/tty "$logs/tx.$$" || exit 1
exec /usr/lib/postgresql/15/bin/pgbench -n -c 2 -j 1 -T 100000000 -P 1 --progress-timestamp \\
  -l --log-prefix="$logs/tx" gangway
`;

/**
 * Reads pgbench's terminal: passes its progress lines on as
 * `gangway-pgbench progress: ...`, and from its per-transaction log
 * (`client_id transaction_no latency_us script_no epoch_s epoch_us`, in
 * completion order with one thread) prints, for each second of the
 * guest's clock, the transactions completed and their p99 latency:
 * `gangway-latency sec=S n=N p99_ms=X`, as soon as a later transaction or
 * progress line closes the second. Only perl-base, in every image.
 */
const LATENCY_PROGRAM = `#!/usr/bin/perl
use strict;
use warnings;
$| = 1;
my ($second, @latencies);
sub report {
  return unless defined $second && @latencies;
  my @sorted = sort { $a <=> $b } @latencies;
  my $rank = int(0.99 * @sorted + 0.999999);
  printf "gangway-latency sec=%d n=%d p99_ms=%.3f\\n", $second, scalar @sorted, $sorted[$rank - 1] / 1000;
}
while (my $line = <STDIN>) {
  $line =~ s/\\r?\\n\\z//;
  my @f = split " ", $line;
  if (@f >= 6 && $f[2] =~ /^\\d+$/ && $f[4] =~ /^\\d+$/) {
    if (!defined $second || $f[4] != $second) {
      report();
      ($second, @latencies) = ($f[4]);
    }
    push @latencies, $f[2];
  } elsif ($line ne "") {
    # A progress line at the guest's clock T: the seconds before T are complete.
    if ($line =~ /^progress: (\\d+)/ && defined $second && $1 > $second) {
      report();
      ($second, @latencies) = ();
    }
    print "gangway-pgbench $line\\n";
  }
}
report();
`;

/** wrk's report after each one-second run, on one line: requests, seconds, p99, errors. */
const WRK_REPORT = `done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "gangway-web requests=%d seconds=%.3f p50_ms=%.2f p99_ms=%.2f errors=%d\\n",
    summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    e.connect + e.read + e.write + e.status + e.timeout))
end
`;

/** A service whose output goes to the serial console, where the lab reads it. */
function consoleService(description: string, program: string, after: string): string {
  return `[Unit]
Description=${description}
After=${after}

[Service]
ExecStart=${program}
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
TTYReset=no
TTYVHangup=no

[Install]
WantedBy=multi-user.target
`;
}

/**
 * Units masked: a login prompt would share ttyS0 with the heartbeat, and
 * timers would wake at random in the middle of a measurement.
 */
const MASKED_UNITS = [
  "serial-getty@ttyS0.service",
  "getty@tty1.service",
  "getty-static.service",
  "apt-daily.timer",
  "apt-daily-upgrade.timer",
  "dpkg-db-backup.timer",
  "e2scrub_all.timer",
  "e2scrub_reap.service",
  "fstrim.timer",
];

/** PostgreSQL sized for a guest of a few hundred MiB. */
const POSTGRES_CONF = `# gangway: a small guest
shared_buffers = 64MB
max_wal_size = 256MB
`;

/** The files gangway adds to a recipe's tree. */
export function imageFiles(recipe: DebianRecipe): ImageFile[] {
  const units = "/etc/systemd/system";
  const service = (name: string, text: string): ImageFile[] => [
    { kind: "file", path: `${units}/${name}`, text, mode: 0o644 },
    {
      kind: "symlink",
      path: `${units}/multi-user.target.wants/${name}`,
      target: `${units}/${name}`,
    },
  ];
  const files: ImageFile[] = [
    {
      kind: "file",
      path: "/usr/local/sbin/gangway-heartbeat",
      text: HEARTBEAT_PROGRAM,
      mode: 0o755,
    },
    { kind: "file", path: "/usr/local/sbin/gangway-workload", text: WORKLOAD_PROGRAM, mode: 0o755 },
    ...service(
      "gangway-heartbeat.service",
      consoleService("gangway heartbeat", "/usr/local/sbin/gangway-heartbeat", "local-fs.target"),
    ),
    ...service(
      "gangway-workload.service",
      consoleService(
        "gangway workload (gangway.mode)",
        "/usr/local/sbin/gangway-workload",
        "postgresql.service nginx.service",
      ),
    ),
    ...MASKED_UNITS.map((unit): ImageFile => ({
      kind: "symlink",
      path: `${units}/${unit}`,
      target: "/dev/null",
    })),
  ];
  if (recipe.workloads.includes("pgbench")) {
    files.push({
      kind: "file",
      path: "/etc/postgresql/15/main/conf.d/gangway.conf",
      text: POSTGRES_CONF,
      mode: 0o644,
    });
    files.push(
      { kind: "file", path: "/usr/local/sbin/gangway-pgbench", text: PGBENCH_PROGRAM, mode: 0o755 },
      { kind: "file", path: "/usr/local/sbin/gangway-latency", text: LATENCY_PROGRAM, mode: 0o755 },
    );
  }
  if (recipe.workloads.includes("web")) {
    files.push({
      kind: "file",
      path: "/usr/local/share/gangway/wrk-report.lua",
      text: WRK_REPORT,
      mode: 0o644,
    });
  }
  return files;
}

/**
 * The recipe's cache key: 16 hex digits of the SHA-256 of everything that
 * decides the image (build format, suite, packages, added files). The
 * package versions are not in it: the archive moves on, and an image is
 * rebuilt with the newest packages only when its cache entry is removed.
 */
export async function recipeKey(recipe: DebianRecipe): Promise<string> {
  const recipeText = JSON.stringify({
    format: BUILD_FORMAT,
    args: mmdebstrapArgs(recipe, "DIR"),
    files: imageFiles(recipe),
  });
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(recipeText));
  return [...new Uint8Array(digest).slice(0, 8)].map((b) => b.toString(16).padStart(2, "0"))
    .join("");
}
