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

Deno.test("gangway-latency prints each second's count and p99 from pgbench's log", async () => {
  const dir = await Deno.makeTempDir({ prefix: "gangway-latency-test-" });
  try {
    const program = `${dir}/gangway-latency`;
    await Deno.writeTextFile(program, fileOf("debian-db", "gangway-latency"));
    // pgbench's per-transaction log: client, transaction, latency (us), script, epoch s, us.
    const log = [
      ...Array.from({ length: 100 }, (_, i) => `0 ${i} ${(i + 1) * 100} 0 1000 ${i}`),
      "1 1 2500 0 1001 20",
      "not a log line",
      "0 2 9000 0 1002 30",
    ].join("\n") + "\n";
    await Deno.writeTextFile(`${dir}/tx.4242`, log);
    const run = await new Deno.Command("perl", { args: [program, dir] }).output();
    assert(run.success, new TextDecoder().decode(run.stderr));
    const lines = new TextDecoder().decode(run.stdout).trim().split("\n");
    assertEquals(lines, [
      "gangway-latency sec=1000 n=100 p99_ms=9.900",
      "gangway-latency sec=1001 n=1 p99_ms=2.500",
      "gangway-latency sec=1002 n=1 p99_ms=9.000",
    ]);
    assertEquals(parseWorkloadLine(lines[0]!), {
      kind: "latency",
      guestSecond: 1000,
      count: 100,
      p99Ms: 9.9,
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
