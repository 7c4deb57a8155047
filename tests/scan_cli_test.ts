import { fileURLToPath } from "node:url";
import { assert, assertEquals } from "./_assert.ts";
import { PAGE_SIZE } from "../src/native/ram_file.ts";
import { runCli } from "./_cli.ts";
import { makeRamFile, patternPage, removeFiles, shmPath } from "./_fixtures.ts";

Deno.test("scan --json prints exactly one JSON object with the documented fields", async () => {
  const a = makeRamFile(shmPath("a"), [patternPage(1), "hole", patternPage(2), patternPage(1)]);
  const b = makeRamFile(shmPath("b"), [patternPage(2), "zero", patternPage(3)], 2 * PAGE_SIZE + 1);
  try {
    const { code, stdout, stderr } = await runCli("scan", ["--json", a, b]);
    assertEquals(code, 0, stderr);
    const report = JSON.parse(stdout);
    assertEquals(Object.keys(report), ["pageSize", "guests", "totals", "seconds", "threads"]);
    assertEquals(report.pageSize, 4096);
    assertEquals(report.guests, [
      { path: a, pages: 4, zero: 1, unique: 2, duplicate: 1 },
      { path: b, pages: 3, zero: 1, unique: 1, duplicate: 1 },
    ]);
    assertEquals(report.totals, {
      pages: 7,
      zero: 2,
      unique: 3,
      duplicate: 2,
      duplicateWithin: 1,
      duplicateAcross: 1,
      bytes: 6 * PAGE_SIZE + 1,
      uniqueBytes: 3 * PAGE_SIZE,
    });
    assert(typeof report.seconds === "number" && report.seconds >= 0);
    assert(Number.isInteger(report.threads) && report.threads >= 1, String(report.threads));
  } finally {
    await removeFiles(a, b);
  }
});

Deno.test("scan --threads 2 and auto count exactly what one thread counts", async () => {
  // 4096 pages a guest: enough for the page work to be split among threads;
  // one chunk a guest, so auto runs the first on one thread and the second on all.
  const paths = [0, 1].map((g) =>
    makeRamFile(
      shmPath(`threads${g}`),
      Array.from({ length: 4096 }, (_, p) => {
        if (p % 5 === 0) return "hole" as const;
        if (p % 5 === 1) return "zero" as const;
        return patternPage(p % 3 === 0 ? p % 50 : g * 100_000 + p);
      }),
    )
  );
  try {
    const counts = async (threads: string) => {
      const { code, stdout, stderr } = await runCli("scan", [
        "--json",
        "--threads",
        threads,
        ...paths,
      ]);
      assertEquals(code, 0, stderr);
      const { guests, totals } = JSON.parse(stdout);
      return { guests, totals };
    };
    const one = await counts("1");
    assert(one.totals.duplicateAcross > 0 && one.totals.zero > 0, JSON.stringify(one.totals));
    assertEquals(await counts("2"), one);
    assertEquals(await counts("auto"), one);
  } finally {
    await removeFiles(...paths);
  }
});

Deno.test("scan without --json prints a table with the totals and the saving", async () => {
  const a = makeRamFile(shmPath("a"), [patternPage(1), patternPage(2)]);
  const b = makeRamFile(shmPath("b"), [patternPage(1), patternPage(3)]);
  try {
    const { code, stdout } = await runCli("scan", [a, b]);
    assertEquals(code, 0);
    assert(/^total\s+4\s+0\s+3\s+1\s+0\s+1$/m.test(stdout), stdout);
    assert(stdout.includes("25.0% less page data"), stdout);
    // A file of zeros has no saving to tell, and one page is a page.
    const zeros = makeRamFile(shmPath("zeros"), ["zero"]);
    try {
      const zero = await runCli("scan", [zeros]);
      assertEquals(zero.code, 0, zero.stderr);
      assert(zero.stdout.includes("in 1 page, 0 distinct"), zero.stdout);
      assert(zero.stdout.includes("Every page is zero"), zero.stdout);
      assert(!zero.stdout.includes(" - "), zero.stdout);
    } finally {
      await removeFiles(zeros);
    }
  } finally {
    await removeFiles(a, b);
  }
});

Deno.test("scan reads relative paths from the directory `deno task` was run in (INIT_CWD)", async () => {
  const a = makeRamFile(shmPath("relative"), [patternPage(1), patternPage(1)]);
  const [dir, name] = [a.slice(0, a.lastIndexOf("/")), a.slice(a.lastIndexOf("/") + 1)];
  const project = fileURLToPath(new URL("../", import.meta.url));
  const elsewhere = await Deno.makeTempDir({ prefix: "gangway-test-" });
  const permissions = ["--allow-ffi", "--allow-read", "--allow-env=GANGWAY_LIB,INIT_CWD"];
  try {
    // As a task runs it: in the project's folder, the user's directory in INIT_CWD. The report
    // names the file it read.
    const task = await runCli("scan", ["--json", name], {
      permissions,
      env: { INIT_CWD: dir },
      cwd: project,
    });
    assertEquals(task.code, 0, task.stderr);
    assertEquals(JSON.parse(task.stdout).guests, [
      { path: a, pages: 2, zero: 0, unique: 1, duplicate: 1 },
    ]);
    // Run elsewhere (a plain `deno run` in a shell an outer task started), or without the
    // permission to read it, the path is the working directory's.
    for (const [cwd, flags] of [[elsewhere, permissions], [project, undefined]] as const) {
      const plain = await runCli("scan", ["--json", name], {
        permissions: flags && [...flags],
        env: { INIT_CWD: dir },
        cwd,
      });
      assertEquals(plain.code, 2, plain.stdout);
      assert(plain.stderr.includes(`"${name}": no such file`), plain.stderr);
    }
  } finally {
    await removeFiles(a);
    await Deno.remove(elsewhere);
  }
});

Deno.test("scan --help prints the usage and exits with 0", async () => {
  for (const flag of ["--help", "-h"]) {
    const { code, stdout, stderr } = await runCli("scan", ["--", flag]);
    assertEquals(code, 0, stderr);
    assert(stdout.startsWith("usage: "), stdout);
    assertEquals(stderr, "");
  }
});

Deno.test("scan refuses bad input with exit code 2, a clear error and nothing on stdout", async (t) => {
  const good = makeRamFile(shmPath("good"), [patternPage(1)]);
  const empty = makeRamFile(shmPath("empty"), []);
  const dir = await Deno.makeTempDir({ prefix: "gangway-test-" });
  const unreadable = `${dir}/unreadable`;
  await Deno.writeFile(unreadable, patternPage(1), { mode: 0o000 });
  const cases: [string, string[], string, boolean?][] = [
    ["a missing file", [shmPath("missing")], "no such file"],
    ["a directory", [dir], "is a directory"],
    ["an empty file", [empty], "file is empty"],
    ["the same file twice", [good, good], "is the same file as"],
    ["an unreadable file", [unreadable], "permission denied", true],
    ["no file at all", [], "no RAM files given"],
    ["an unknown flag", ["--frobnicate", good], "Unknown option"],
    ["no thread", ["--threads", "0", good], "--threads needs a positive integer"],
    ["more threads than a scan runs", ["--threads", "9", good], "--threads needs 1 to 8 or auto"],
    ["more threads than FFI takes", ["--threads", "4294967296", good], "--threads needs 1 to 8"],
  ];
  try {
    for (const [label, args, message, withoutDacOverride] of cases) {
      await t.step(label, async () => {
        const { code, stdout, stderr } = await runCli("scan", ["--json", ...args], {
          withoutDacOverride,
        });
        assertEquals(code, 2, stderr);
        assertEquals(stdout, "");
        assert(stderr.includes(message), stderr);
      });
    }
  } finally {
    await removeFiles(good, empty);
    await Deno.remove(dir, { recursive: true });
  }
});
