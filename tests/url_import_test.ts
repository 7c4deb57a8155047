/**
 * Gangway imported by URL, as a user without a checkout does: the
 * repository served over HTTP on loopback, and Deno run from an empty
 * directory with its own DENO_DIR (so every module is truly fetched) and
 * its own cache (so the C library is built there from the sources that
 * came with the module graph).
 *
 * @module
 */
import { assert, assertEquals } from "./_assert.ts";
import { type CliResult, runCommand } from "./_cli.ts";
import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

/** TypeScript must be served as TypeScript: python's http.server says "text/vnd.trolltech.linguist". */
const CONTENT_TYPES: Record<string, string> = {
  ".ts": "application/typescript",
  ".json": "application/json",
};

/** Serves the repository's files read-only on loopback and records every path asked for. */
function serveRepository(): { server: Deno.HttpServer<Deno.NetAddr>; requested: string[] } {
  const requested: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    const path = normalize(decodeURIComponent(new URL(request.url).pathname));
    requested.push(path);
    if (path.split("/").includes("..")) return new Response("bad path", { status: 400 });
    try {
      const body = await Deno.readFile(join(ROOT, path));
      const type = CONTENT_TYPES[extname(path)] ?? "text/plain";
      return new Response(body, { headers: { "content-type": type } });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  return { server, requested };
}

/** Runs Deno in `cwd` as a user would, with the given environment. */
function deno(args: string[], cwd: string, env: Record<string, string>): Promise<CliResult> {
  return runCommand(Deno.execPath(), args, { cwd, env });
}

/** Two guests of 3 pages: a distinct page each, one page they share, and a zero page. */
function writeGuests(dir: string): [string, string] {
  const page = (byte: number) => new Uint8Array(4096).fill(byte);
  const guest = (pages: Uint8Array[]) => {
    const bytes = new Uint8Array(pages.length * 4096);
    pages.forEach((p, i) => bytes.set(p, i * 4096));
    return bytes;
  };
  Deno.writeFileSync(join(dir, "vm1"), guest([page(1), page(7), page(0)]));
  Deno.writeFileSync(join(dir, "vm2"), guest([page(2), page(7), page(0)]));
  return ["vm1", "vm2"];
}

Deno.test("the scan CLI, a script importing mod.ts and a synthetic guest's writer run by URL from an empty directory, the C library built into the cache", async () => {
  const { server, requested } = serveRepository();
  const base = `http://127.0.0.1:${server.addr.port}`;
  const work = Deno.makeTempDirSync({ prefix: "gangway-url-" });
  const home = join(work, "home");
  const env = { DENO_DIR: join(work, "deno"), GANGWAY_CACHE: join(work, "cache"), HOME: home };
  try {
    Deno.mkdirSync(home);
    const [vm1, vm2] = writeGuests(home);

    // Without the permissions to build, the error says which are missing and nothing is built.
    const denied = await deno(
      ["run", "--allow-read", "--allow-ffi", "--allow-env", `${base}/src/cli/scan.ts`, vm1, vm2],
      home,
      env,
    );
    assertEquals(denied.code, 2, denied.stderr);
    assert(denied.stderr.includes("needs --allow-run=gcc"), denied.stderr);
    assertEquals([...Deno.readDirSync(home)].map((e) => e.name).sort(), ["vm1", "vm2"]);

    const scan = await deno(
      ["run", "-A", `${base}/src/cli/scan.ts`, "--json", vm1, vm2],
      home,
      env,
    );
    assertEquals(scan.code, 0, scan.stderr);
    assert(scan.stderr.includes("Building the gangway C library into"), scan.stderr);
    const report = JSON.parse(scan.stdout);
    assertEquals(report.guests, [
      { path: vm1, pages: 3, zero: 1, unique: 2, duplicate: 0 },
      { path: vm2, pages: 3, zero: 1, unique: 1, duplicate: 1 },
    ]);
    assertEquals(report.totals.duplicateAcross, 1);
    const libraries = [...Deno.readDirSync(join(env.GANGWAY_CACHE, "lib"))];
    assertEquals(libraries.length, 1, "one build, keyed by the sources' hash");
    Deno.statSync(join(env.GANGWAY_CACHE, "lib", libraries[0]!.name, "libgangway.so"));
    assert(requested.includes("/ffi/index.c"), "the C sources came with the module graph");
    // ffi/build.ts by URL builds into the cache too (it wanted a file URL): here, finds that build.
    const build = await deno(["run", "-A", `${base}/ffi/build.ts`], home, env);
    assertEquals(build.code, 0, build.stderr);
    assertEquals(
      build.stdout.trim(),
      join(env.GANGWAY_CACHE, "lib", libraries[0]!.name, "libgangway.so"),
    );
    const heavy = requested.filter((p) => /^\/src\/(qemu|lab|target|transfer|transport)\//.test(p));
    assertEquals(heavy, [], "a scan loads no QEMU, lab, target or network code");

    // A user's script: mod.ts by URL, the library found in the cache this time.
    requested.length = 0;
    Deno.writeTextFileSync(
      join(home, "main.ts"),
      `import { Gang, scanGang } from "${base}/mod.ts";\n` +
        `using gang = Gang.open([{ name: "vm1", path: "vm1" }, { name: "vm2", path: "vm2" }]);\n` +
        `console.log(JSON.stringify(scanGang(gang).totals));\n`,
    );
    const script = await deno(["run", "-A", "main.ts"], home, env);
    assertEquals(script.code, 0, script.stderr);
    assert(!script.stderr.includes("Building"), script.stderr);
    const totals = JSON.parse(script.stdout);
    assertEquals([totals.pages, totals.zero, totals.unique, totals.duplicate], [6, 2, 3, 1]);
    const qemu = requested.filter((p) => /^\/src\/(qemu|lab|target)\//.test(p));
    assertEquals(qemu, [], "mod.ts loads no QEMU, lab or target code");

    // A child script found by URL, not by a path: a synthetic guest's writer starts and writes.
    Deno.writeTextFileSync(
      join(home, "writer.ts"),
      `import { SyntheticGuest } from "${base}/src/synthetic/synthetic_guest.ts";\n` +
        `await using guest = SyntheticGuest.start("g", "ram", { bytes: 16 * 4096, pagesPerSecond: 1000 });\n` +
        `const deadline = Date.now() + 20_000;\n` +
        `while (Deno.readFileSync("ram").every((byte) => byte === 0) && Date.now() < deadline) {\n` +
        `  await new Promise((resolve) => setTimeout(resolve, 20));\n` +
        `}\n` +
        `console.log(Deno.readFileSync("ram").some((byte) => byte !== 0) ? "written" : "untouched");\n`,
    );
    const writer = await deno(["run", "-A", "writer.ts"], home, env);
    assertEquals([writer.code, writer.stdout.trim()], [0, "written"], writer.stderr);
  } finally {
    await server.shutdown();
    Deno.removeSync(work, { recursive: true });
  }
});
