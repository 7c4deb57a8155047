/**
 * The programs the Debian images run for the pgbench and web workloads,
 * checked here on the host (no guest is started): what they print is what
 * the lab's application view parses.
 */
import { assert, assertEquals } from "./_assert.ts";
import { DEBIAN_RECIPES, imageFiles } from "../src/qemu/_debian_recipes.ts";
import { parseWorkloadLine } from "../src/lab/app_lines.ts";

function fileOf(image: keyof typeof DEBIAN_RECIPES, name: string): string {
  const file = imageFiles(DEBIAN_RECIPES[image]).find((f) => f.path.endsWith(`/${name}`));
  assert(file?.kind === "file", `${image} has ${name}`);
  return file.text;
}

Deno.test("the web workload gives wrk its port: a minbase image has no /etc/services", () => {
  const script = fileOf("debian-web", "gangway-workload");
  // Without the port wrk asks getaddrinfo for "http" and gives up ("Servname not supported").
  const urls = [...script.matchAll(/https?:\/\/[^\s'"]+/g)].map((m) => m[0]);
  assert(urls.length > 0, "the script names nginx's URL");
  for (const url of urls) assert(/^http:\/\/127\.0\.0\.1:\d+\//.test(url), url);
});

Deno.test("the workload script is valid POSIX shell", async () => {
  const script = fileOf("debian-db", "gangway-workload");
  const check = await new Deno.Command("sh", { args: ["-n", "-c", script] }).output();
  assert(check.success, new TextDecoder().decode(check.stderr));
});

Deno.test("gangway-latency passes pgbench's progress on and prints each second's p99", async () => {
  const dir = await Deno.makeTempDir({ prefix: "gangway-latency-test-" });
  try {
    const program = `${dir}/gangway-latency`;
    await Deno.writeTextFile(program, fileOf("debian-db", "gangway-latency"));
    // pgbench's terminal (lines end in CR LF): its progress, and its per-transaction log
    // (client, transaction, latency in us, script, epoch s, us).
    const progress = "progress: 1001.552 s, 100.0 tps, lat 5.0 ms stddev 2.9, 0 failed";
    const terminal = [
      ...Array.from({ length: 100 }, (_, i) => `0 ${i} ${(i + 1) * 100} 0 1000 ${i}`),
      progress,
      "1 1 2500 0 1001 20",
      "",
      "0 2 9000 0 1002 30",
    ].map((line) => line + "\r\n").join("");
    const child = new Deno.Command("perl", {
      args: [program],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(terminal));
    await writer.close();
    const run = await child.output();
    assert(run.success, new TextDecoder().decode(run.stderr));
    const lines = new TextDecoder().decode(run.stdout).trim().split("\n");
    assertEquals(lines, [
      "gangway-latency sec=1000 n=100 p99_ms=9.900",
      `gangway-pgbench ${progress}`,
      "gangway-latency sec=1001 n=1 p99_ms=2.500",
      "gangway-latency sec=1002 n=1 p99_ms=9.000",
    ]);
    assertEquals(parseWorkloadLine(lines[0]!), {
      kind: "latency",
      guestSecond: 1000,
      count: 100,
      p99Ms: 9.9,
    });
    assertEquals(parseWorkloadLine(lines[1]!), { kind: "work", guestClock: 1001.552, rate: 100 });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pgbench's per-transaction log goes to its terminal, which stdio flushes at each line", () => {
  const wrapper = fileOf("debian-db", "gangway-pgbench");
  assert(wrapper.includes('ln -sf /dev/tty "$logs/tx.$$"'), "the log is the terminal");
  assert(/exec \S+\/pgbench .*-l --log-prefix="\$logs\/tx"/s.test(wrapper), wrapper);
  const workload = fileOf("debian-db", "gangway-workload");
  assert(workload.includes("script -qfec"), "pgbench runs on a terminal");
});
