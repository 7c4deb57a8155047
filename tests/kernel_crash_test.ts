/**
 * Kernel crash reports found in guests' serial logs, from logs shaped as
 * Debian's 6.1 kernel prints them on ttyS0 (CRLF line ends, printk
 * timestamps, the test guest's heartbeats around them).
 */
import { assertEquals } from "./_assert.ts";
import { findKernelCrash, readKernelCrash } from "../src/qemu/kernel_crash.ts";

function serial(lines: string[]): string {
  return lines.map((line) => `${line}\r\n`).join("");
}

/** The crash issue 15 saw at a QEMU destination: memory lost in transit broke a free list. */
const LIST_DEL = serial([
  "gangway-heartbeat 41 checksum-ok 13",
  "[   52.118734] list_del corruption. prev->next should be ffffd6a3c0219848, but was ffffd6a3c0219808. (prev=ffffd6a3c02b1e48)",
  "[   52.119972] ------------[ cut here ]------------",
  "[   52.120388] kernel BUG at lib/list_debug.c:59!",
  "[   52.120934] invalid opcode: 0000 [#1] PREEMPT SMP NOPTI",
  "[   52.121452] CPU: 0 PID: 71 Comm: md5sum Not tainted 6.1.0-57-amd64 #1  Debian 6.1.158-1",
  "[   52.122136] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.2-debian-1.16.2-1 04/01/2014",
  "[   52.122895] RIP: 0010:__list_del_entry_valid.cold+0x4b/0x6f",
  "[   52.123418] Code: fe ff 0f 0b 48 89 fe 48 c7 c7 f8 2d 8b 9a e8 6c 47 fe ff 0f 0b",
  "[   52.124512] RSP: 0018:ffffb1e2c01dfb28 EFLAGS: 00010046",
  "[   52.131000] Call Trace:",
  "[   52.131200]  <TASK>",
  "[   52.131400]  __rmqueue_pcplist+0x2a5/0x850",
  "[   52.131700]  get_page_from_freelist+0x1f2/0x1170",
  "[   52.140000] Kernel panic - not syncing: Fatal exception",
  "[   52.140500] Kernel Offset: 0x2a400000 from 0xffffffff81000000 (relocation range: 0xffffffff80000000-0xffffffffbfffffff)",
]);

Deno.test("findKernelCrash() reads a list corruption BUG from its first line, RIP included", () => {
  assertEquals(findKernelCrash(LIST_DEL), {
    kind: "corruption",
    lines: [
      "list_del corruption. prev->next should be ffffd6a3c0219848, but was ffffd6a3c0219808. (prev=ffffd6a3c02b1e48)",
      "kernel BUG at lib/list_debug.c:59!",
      "invalid opcode: 0000 [#1] PREEMPT SMP NOPTI",
      "CPU: 0 PID: 71 Comm: md5sum Not tainted 6.1.0-57-amd64 #1  Debian 6.1.158-1",
      "RIP: 0010:__list_del_entry_valid.cold+0x4b/0x6f",
    ],
  });
});

Deno.test("findKernelCrash() reads a page fault Oops as a BUG", () => {
  const crash = findKernelCrash(serial([
    "gangway-heartbeat 30 checksum-ok 10",
    "[   33.501122] BUG: unable to handle page fault for address: ffff8c9a47fe1000",
    "[   33.501913] #PF: supervisor read access in kernel mode",
    "[   33.502456] #PF: error_code(0x0000) - not-present page",
    "[   33.502987] PGD 7601067 P4D 7601067 PUD 0",
    "[   33.503420] Oops: 0000 [#1] PREEMPT SMP NOPTI",
    "[   33.505120] RIP: 0010:memcpy_erms+0x6/0x10",
  ]));
  assertEquals(crash?.kind, "BUG");
  assertEquals(crash?.lines[0], "BUG: unable to handle page fault for address: ffff8c9a47fe1000");
  assertEquals(crash?.lines.length, 5);
  assertEquals(crash?.lines.at(-1), "RIP: 0010:memcpy_erms+0x6/0x10");
});

Deno.test("findKernelCrash() reads a general protection fault and a bare panic", () => {
  const gpf = findKernelCrash(serial([
    "[   12.004211] general protection fault, probably for non-canonical address 0xdead000000000122: 0000 [#1] PREEMPT SMP NOPTI",
    "[   12.004900] CPU: 0 PID: 1 Comm: init Not tainted 6.1.0-57-amd64 #1  Debian 6.1.158-1",
  ]));
  assertEquals(gpf?.kind, "Oops");
  assertEquals(gpf?.lines.length, 2);
  const panic = findKernelCrash(serial([
    "gangway-heartbeat 7 checksum-ok 2",
    "[    9.871002] Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b",
    "[    9.871700] Kernel Offset: 0x1e200000 from 0xffffffff81000000",
  ]));
  assertEquals(panic, {
    kind: "panic",
    lines: [
      "Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b",
      "Kernel Offset: 0x1e200000 from 0xffffffff81000000",
    ],
  });
});

Deno.test("findKernelCrash() finds a report the guest's own output tore in two", () => {
  const crash = findKernelCrash(serial([
    "gangway-heartbeat 12 checks[   40.100001] BUG: kernel NULL pointer dereference, address: 0000000000000008",
    "um-ok 4",
    "[   40.100800] #PF: supervisor write access in kernel mode",
  ]));
  assertEquals(crash?.kind, "BUG");
  assertEquals(crash?.lines, [
    "BUG: kernel NULL pointer dereference, address: 0000000000000008",
    "um-ok 4",
    "#PF: supervisor write access in kernel mode",
  ]);
});

Deno.test("findKernelCrash() finds nothing in a healthy boot, warnings and mitigations included", () => {
  const healthy = serial([
    "[    0.000000] Linux version 6.1.0-57-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.158-1",
    "[    0.112233] Spectre V2 : Mitigation: Retpolines",
    "[    0.223344] MDS: Vulnerable: Clear CPU buffers attempted, no microcode",
    "[    1.002003] WARNING: CPU: 0 PID: 1 at arch/x86/kernel/fpu/xstate.c:792 fpu__init_system_xstate+0x1a/0x40",
    "[    1.456789] Freeing unused kernel image (initmem) memory: 2796K",
    "gangway-ready mode=idle blob_mib=16 md5=0123456789abcdef0123456789abcdef",
    "gangway-heartbeat 1 checksum-pending 0",
    "gangway-heartbeat 2 checksum-bad 1",
  ]);
  assertEquals(findKernelCrash(healthy), undefined);
  assertEquals(findKernelCrash(""), undefined);
});

Deno.test("readKernelCrash() reads a log file, and finds nothing where there is no log", async () => {
  const path = await Deno.makeTempFile({ prefix: "gangway-crash-", suffix: ".serial.log" });
  try {
    await Deno.writeTextFile(path, LIST_DEL);
    assertEquals((await readKernelCrash(path))?.kind, "corruption");
    assertEquals(await readKernelCrash(`${path}.missing`), undefined);
  } finally {
    await Deno.remove(path);
  }
});
