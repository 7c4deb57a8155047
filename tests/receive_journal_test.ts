/**
 * The journal a killed receiver leaves (receive_journal.ts) undoes only
 * the files the gang had: never a file put at a guest's name since, nor a
 * file outside the directory through a link there.
 */
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { PAGE_SIZE } from "../src/native/ram_file.ts";
import {
  JOURNAL_NAME,
  readLeftoverJournal,
  ReceiveJournal,
} from "../src/transfer/receive_journal.ts";
import { MAX_GUESTS } from "../src/transfer/receiver_options.ts";
import { join } from "node:path";
import { openTargetFiles, recoverInterruptedGang } from "../src/transfer/target_files.ts";
import type { Hello } from "../src/transfer/hello_frame.ts";

const SIZE = 4 * PAGE_SIZE;

Deno.test("recovery leaves a gang's file that was moved out of the directory, a link left at its name", async () => {
  const dir = await shmDir();
  const outside = await shmDir();
  try {
    await Deno.writeFile(`${dir}/kept`, new Uint8Array(0)); // taken by the gang: "existing"
    killedMidGang(dir, "kept");
    const data = new Uint8Array(SIZE).fill(7);
    await Deno.writeFile(`${dir}/kept`, data); // what the gang received before the kill
    // Someone keeps it elsewhere (same file system: the same file), leaving a link behind.
    await Deno.rename(`${dir}/kept`, `${outside}/kept`);
    await Deno.symlink(`${outside}/kept`, `${dir}/kept`);

    assertEquals(recoverInterruptedGang(dir), []);
    assertEquals(await Deno.readFile(`${outside}/kept`), data, "nothing outside is written");
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(outside, { recursive: true });
  }
});

/** Where receivers keep RAM: tmpfs, which does not hand a removed file's inode number on. */
const shmDir = () => Deno.makeTempDir({ dir: "/dev/shm", prefix: "gangway-journal-test-" });

function hello(...names: string[]): Hello {
  return {
    version: 6,
    pageSize: PAGE_SIZE,
    seed: 1n,
    token: "",
    guests: names.map((name) => ({ name, size: SIZE })),
  };
}

/** A gang's files and journal, as a receiver killed mid-gang leaves them (nothing closed). */
function killedMidGang(dir: string, ...names: string[]): void {
  const journal = ReceiveJournal.create(dir, names.length);
  for (const target of openTargetFiles(hello(...names), dir, journal)) target.file.close();
}

Deno.test("recovery undoes the files the killed gang made or took, and only those", async () => {
  const dir = await shmDir();
  const outside = await shmDir();
  try {
    await Deno.writeFile(`${dir}/taken`, new Uint8Array(0)); // a waiting file: taken, "existing"
    killedMidGang(dir, "made", "taken", "replaced", "linked");
    // Since the kill: "replaced" is another file now (a guest that runs here), and "linked" a
    // link to a file outside the directory.
    const data = new Uint8Array(SIZE).fill(7);
    await Deno.remove(`${dir}/replaced`);
    await Deno.writeFile(`${dir}/replaced`, data);
    await Deno.writeFile(`${outside}/victim`, data);
    await Deno.remove(`${dir}/linked`);
    await Deno.symlink(`${outside}/victim`, `${dir}/linked`);

    assertEquals(recoverInterruptedGang(dir).sort(), ["made", "taken"]);
    assertEquals(await Deno.readFile(`${dir}/replaced`), data, "a file the gang never had kept");
    assertEquals(await Deno.readFile(`${outside}/victim`), data, "nothing outside is written");
    assertEquals(Deno.statSync(`${dir}/taken`).size, 0, "the waiting file back as it was");
    assertEquals(
      Deno.readDirSync(dir).map((e) => e.name).toArray().sort(),
      ["linked", "replaced", "taken"],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(outside, { recursive: true });
  }
});

Deno.test("recovery ignores journal entries it did not write (no file identity, odd sizes)", async () => {
  const dir = await shmDir();
  const outside = await shmDir();
  try {
    const data = new Uint8Array(SIZE).fill(9);
    await Deno.writeFile(`${outside}/victim`, data);
    await Deno.symlink(`${outside}/victim`, `${dir}/vm1`);
    await Deno.writeFile(`${dir}/vm2`, new Uint8Array(0));
    const enc = new TextEncoder();
    const page = (text: string) => {
      const p = new Uint8Array(PAGE_SIZE);
      p.set(enc.encode(text));
      return p;
    };
    const journal = new Uint8Array(3 * PAGE_SIZE);
    journal.set(page("gangway receive journal 1"), 0);
    journal.set(page(JSON.stringify({ name: "vm1", state: "existing", sizeBefore: 0 })), PAGE_SIZE);
    journal.set(
      page(JSON.stringify({ name: "vm2", state: "existing", sizeBefore: 1e18 })),
      2 * PAGE_SIZE,
    );
    await Deno.writeFile(`${dir}/.gangway-receiving`, journal);

    assertEquals(recoverInterruptedGang(dir), []);
    assertEquals(await Deno.readFile(`${outside}/victim`), data);
    assertEquals(Deno.statSync(`${dir}/vm2`).size, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(outside, { recursive: true });
  }
});

Deno.test("a file at the journal's name with data and no journal mark is refused and kept; one whose making was cut short is empty", async () => {
  const dir = await shmDir();
  try {
    const path = join(dir, JOURNAL_NAME);
    const garbage = [
      new TextEncoder().encode("a note someone left here\n"), // shorter than a page
      new Uint8Array(3 * PAGE_SIZE).fill(7, PAGE_SIZE, PAGE_SIZE + 10), // page 0 zero, page 1 not
    ];
    for (const bytes of garbage) {
      await Deno.writeFile(path, bytes);
      assertThrows(
        () => recoverInterruptedGang(dir),
        Error,
        "is not a journal gangway wrote (no journal mark): remove it to start",
      );
      assertEquals(await Deno.readFile(path), bytes, "left as it was");
    }
    // Cut short between sizing the journal and writing its mark: holes only.
    await Deno.truncate(path, 0);
    await Deno.truncate(path, 4 * PAGE_SIZE);
    assertEquals(readLeftoverJournal(dir), []);
    assertEquals(recoverInterruptedGang(dir), []);
    assertEquals(Deno.readDirSync(dir).toArray(), [], "an empty journal is removed");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a journal's name holding no journal gangway wrote stops recovery with a clear error", async () => {
  const dir = await shmDir();
  try {
    const path = join(dir, JOURNAL_NAME);
    const huge = join(dir, "huge");
    await Deno.writeFile(huge, new Uint8Array(0));
    await Deno.truncate(huge, (MAX_GUESTS + 2) * PAGE_SIZE); // sparse: hours to read page by page
    const cases: [string, () => Promise<void>][] = [
      ["not a regular file", () => Deno.symlink(huge, path)],
      ["not a regular file", () => Deno.mkdir(path)],
      ["not a regular file", async () => {
        assert((await new Deno.Command("mkfifo", { args: [path] }).output()).success);
      }],
      [`${(MAX_GUESTS + 2) * PAGE_SIZE} bytes`, () => Deno.rename(huge, path)],
    ];
    for (const [why, make] of cases) {
      await make();
      assertThrows(
        () => readLeftoverJournal(dir),
        Error,
        `is not a journal gangway wrote (${why})`,
      );
      assertThrows(() => recoverInterruptedGang(dir), Error, "remove it to start");
      await Deno.remove(path);
    }
    {
      using _socket = Deno.listen({ transport: "unix", path }); // its file goes with it
      assertThrows(
        () => readLeftoverJournal(dir),
        Error,
        "is not a journal gangway wrote (not a regular file)",
      );
    }
    assertEquals(readLeftoverJournal(dir), undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a journal another user made, or one with bytes after its text, is not trusted", async () => {
  const dir = await shmDir();
  const outside = await shmDir();
  try {
    const path = join(dir, JOURNAL_NAME);
    const victim = new Uint8Array(SIZE).fill(3);
    await Deno.writeFile(`${dir}/vm1`, victim);
    const { dev, ino } = Deno.statSync(`${dir}/vm1`);
    const page = (...texts: string[]) => {
      const p = new Uint8Array(PAGE_SIZE);
      let at = 0;
      for (const text of texts) {
        const bytes = new TextEncoder().encode(text);
        p.set(bytes, at);
        at += bytes.length + 1; // each text ends with a zero
      }
      return p;
    };
    const mark = "gangway receive journal 1";
    // An entry that names vm1 as a file the gang found empty: recovery would empty it again.
    const takeVm1 = JSON.stringify({
      name: "vm1",
      state: "existing",
      file: `${dev}:${ino}`,
      sizeBefore: 0,
    });
    const journal = (first: Uint8Array, second: Uint8Array) => {
      const bytes = new Uint8Array(2 * PAGE_SIZE);
      bytes.set(first, 0);
      bytes.set(second, PAGE_SIZE);
      return bytes;
    };

    await Deno.writeFile(path, journal(page(mark), page(takeVm1)));
    await Deno.chown(path, 65534, 65534); // nobody's, in a directory anyone may write
    assertThrows(
      () => recoverInterruptedGang(dir),
      Error,
      "is not a journal gangway wrote (another user owns it): remove it to start",
    );
    assertEquals(await Deno.readFile(`${dir}/vm1`), victim, "nothing another user named is undone");

    await Deno.chown(path, Deno.uid(), Deno.gid());
    await Deno.writeFile(path, journal(page(mark, "x"), page(takeVm1)));
    assertThrows(() => recoverInterruptedGang(dir), Error, "(no journal mark)");
    await Deno.writeFile(path, journal(page(mark), page(takeVm1, "}")));
    assertEquals(recoverInterruptedGang(dir), [], "an entry with bytes after it is skipped");
    assertEquals(await Deno.readFile(`${dir}/vm1`), victim);

    // What is at the journal's name when a gang starts is removed, never written: a link...
    await Deno.writeFile(`${outside}/kept`, victim);
    await Deno.symlink(`${outside}/kept`, path);
    ReceiveJournal.create(dir, 1).remove();
    assertEquals(await Deno.readFile(`${outside}/kept`), victim);
    // ...and what cannot be removed (another user's file in a sticky directory; here a directory
    // that is not empty) stops the gang with a clear error.
    await Deno.mkdir(join(path, "x"), { recursive: true });
    assertThrows(
      () => ReceiveJournal.create(dir, 1),
      Error,
      "is there and cannot be removed (another user's file?): remove it to start",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(outside, { recursive: true });
  }
});
