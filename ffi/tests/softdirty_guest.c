/*
 * The soft-dirty path on a kernel that has it. This machine's kernel lacks
 * CONFIG_MEM_SOFT_DIRTY, Debian's 6.1 has it: tests/softdirty_guest_test.ts
 * boots that kernel under QEMU with this program, linked statically, as
 * the initramfs's /init.
 *
 * It makes the calls of the production tracker (SoftDirtyTracker in
 * src/plan/dirty_tracking.ts, through src/native/pagemap.ts):
 * gw_soft_dirty_supported, gw_soft_dirty_clear of another process and
 * gw_pagemap_read of its soft-dirty bits. That process is a child that maps
 * a shared file, as QEMU maps guest RAM, and writes and reads pages when
 * told to. Each round checks that exactly the pages written since the last
 * clear read dirty; untouched, only-read and never-mapped pages read clean.
 *
 * Prints one verdict line on stdout (the guest's serial console):
 * "gangway-softdirty ok N pages" or "gangway-softdirty FAIL why". As pid 1
 * it first mounts /proc and a tmpfs, and afterwards resets the machine
 * (QEMU runs with -no-reboot, so it exits). Elsewhere it exits 0 or 1.
 *
 * Build: deno run ... ffi/build.ts --guest (ffi/build/guest/softdirty_guest).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../gangway.h"

#define PAGE GW_PAGE_SIZE
/* A full pread batch of ffi/pagemap.c (4096 entries) and a short second one. */
#define RAM_PAGES (4096 + 100)
#define RAM_BYTES ((size_t)RAM_PAGES * PAGE)
/* Rounds of writes; round 0 is the target's start-up, before tracking starts. */
#define ROUNDS 3

static char why[512];

/* Records why the check failed (the first reason wins) and returns -1. */
static int fail(const char *fmt, ...)
{
	va_list ap;

	if (why[0])
		return -1;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	return -1;
}

/* Pages the target writes at start-up: all but every eighth, left untouched like unused guest RAM. */
static int written_at_start(uint32_t p)
{
	return p % 8 != 7;
}

/* Pages the target writes in round r (1..ROUNDS); some of them it never touched before. */
static int written_in(int round, uint32_t p)
{
	static const uint32_t every[ROUNDS + 1] = {0, 3, 7, 11}, at[ROUNDS + 1] = {0, 0, 2, 4};

	return round >= 1 && round <= ROUNDS && p % every[round] == at[round];
}

/* Pages the target only reads in round r: reading must not make a page dirty. */
static int read_in(int round, uint32_t p)
{
	return p % 5 == (uint32_t)round % 5;
}

/*
 * What the tracker does before a round: round 1 starts tracking (clear, as
 * SoftDirtyTracker.start()), round 2 does not clear (the tracker never
 * clears between rounds: bits accumulate), round 3 clears again.
 */
static int clears_before(int round)
{
	return round != 2;
}

/* The target: maps the file shared, reports where, then runs each round it is sent. */
static void target_main(int ram_fd, int commands, int acks)
{
	uint8_t *ram = mmap(NULL, RAM_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, ram_fd, 0);
	uint64_t address = ram == MAP_FAILED ? 0 : (uintptr_t)ram;
	volatile uint8_t sink = 0;
	uint8_t round;

	if (ram != MAP_FAILED)
		for (uint32_t p = 0; p < RAM_PAGES; p++)
			if (written_at_start(p))
				ram[(size_t)p * PAGE] = 1;
	if (write(acks, &address, sizeof(address)) != sizeof(address) || !address)
		_exit(1);
	while (read(commands, &round, 1) == 1) {
		for (uint32_t p = 0; p < RAM_PAGES; p++)
			if (read_in(round, p))
				sink ^= ram[(size_t)p * PAGE + 1];
		for (uint32_t p = 0; p < RAM_PAGES; p++)
			if (written_in(round, p))
				ram[(size_t)p * PAGE + round] = round;
		if (write(acks, &round, 1) != 1)
			_exit(1);
	}
	_exit(0);
}

/* A running target process and the pipes that drive it. */
struct target {
	pid_t pid;         /* the child */
	int commands;      /* write end: one byte, the round to run */
	int acks;          /* read end: the mapping's address, then one byte per round done */
	uint64_t address;  /* where the child maps the file */
};

static int start_target(const char *dir, struct target *t)
{
	char path[128];
	int to_child[2], from_child[2], ram_fd;

	snprintf(path, sizeof(path), "%s/gangway-softdirty-%d", dir, (int)getpid());
	ram_fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (ram_fd < 0)
		return fail("cannot create %s: %s", path, strerror(errno));
	if (ftruncate(ram_fd, (off_t)RAM_BYTES) != 0 || pipe2(to_child, O_CLOEXEC) != 0 ||
	    pipe2(from_child, O_CLOEXEC) != 0) {
		unlink(path);
		return fail("cannot set up the target: %s", strerror(errno));
	}
	t->pid = fork();
	if (t->pid == 0) {
		close(to_child[1]), close(from_child[0]);
		target_main(ram_fd, to_child[0], from_child[1]);
	}
	close(ram_fd), close(to_child[0]), close(from_child[1]);
	t->commands = to_child[1];
	t->acks = from_child[0];
	if (t->pid < 0) {
		unlink(path);
		return fail("cannot fork the target: %s", strerror(errno));
	}
	if (read(t->acks, &t->address, sizeof(t->address)) != sizeof(t->address) || !t->address) {
		unlink(path);
		return fail("the target could not map %s", path);
	}
	unlink(path); /* mapped now: the mapping keeps the pages */
	return 0;
}

/* Closes the command pipe (the target then exits) and reaps the target. */
static int stop_target(struct target *t)
{
	int status;

	close(t->commands);
	close(t->acks);
	if (waitpid(t->pid, &status, 0) < 0)
		return fail("cannot wait for the target: %s", strerror(errno));
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return fail("the target ended with status 0x%x", status);
	return 0;
}

static int run_round(struct target *t, uint8_t round)
{
	uint8_t done;

	if (write(t->commands, &round, 1) != 1 || read(t->acks, &done, 1) != 1 || done != round)
		return fail("round %d: the target did not answer", round);
	return 0;
}

/* Reads the target's soft-dirty bits as SoftDirtyTracker.changed() does. */
static int read_dirty(const struct target *t, uint8_t *flags, const char *when)
{
	int err = gw_pagemap_read(t->pid, t->address, RAM_PAGES, flags, GW_PM_SOFT_DIRTY);

	if (err)
		return fail("%s: gw_pagemap_read: %s", when, strerror(-err));
	return 0;
}

/* Checks that the dirty pages are exactly those written in rounds [since, round]. */
static int expect_dirty(const uint8_t *flags, int since, int round, const char *when)
{
	uint32_t dirty = 0;

	for (uint32_t p = 0; p < RAM_PAGES; p++) {
		int written = 0;

		for (int r = since; r <= round; r++)
			written |= written_in(r, p);
		if (flags[p] & ~GW_PM_SOFT_DIRTY)
			return fail("%s: page %u has flags 0x%x beyond the soft-dirty one", when, p, flags[p]);
		if (written && !flags[p])
			return fail("%s: page %u was written but reads clean", when, p);
		if (!written && flags[p])
			return fail("%s: page %u was not written but reads dirty", when, p);
		dirty += written;
	}
	printf("softdirty %s: %u of %u pages dirty, as written\n", when, dirty, (uint32_t)RAM_PAGES);
	return 0;
}

/* The tracker's path: clear, let the target write, read; bits accumulate until the next clear. */
static int check_tracking(const char *dir)
{
	uint8_t *flags = malloc(RAM_PAGES);
	struct target t;
	int since = 0, err = 0;
	char when[64];

	if (!flags)
		return fail("out of memory");
	if (start_target(dir, &t) != 0) {
		free(flags);
		return -1;
	}
	for (int round = 1; round <= ROUNDS && !err; round++) {
		if (clears_before(round)) {
			err = gw_soft_dirty_clear(t.pid);
			if (err) {
				err = fail("round %d: gw_soft_dirty_clear: %s", round, strerror(-err));
				break;
			}
			since = round;
			snprintf(when, sizeof(when), "round %d, cleared", round);
			err = read_dirty(&t, flags, when) || expect_dirty(flags, since, round - 1, when);
			if (err)
				break;
		}
		err = run_round(&t, (uint8_t)round);
		snprintf(when, sizeof(when), "round %d, written", round);
		err = err || read_dirty(&t, flags, when) || expect_dirty(flags, since, round, when);
	}
	if (stop_target(&t) != 0)
		err = -1;
	free(flags);
	return err ? -1 : 0;
}

/*
 * The probe must answer 1 here, and leave the caller's own bits alone: it
 * runs in a forked child because clearing is process-wide. First call of
 * gw_soft_dirty_supported in this process, so the probe really runs.
 */
static int check_probe(void)
{
	uint8_t *own = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t flags[4];
	int supported, err;

	if (own == MAP_FAILED)
		return fail("mmap: %s", strerror(errno));
	memset(own, 1, 4 * PAGE);
	err = gw_soft_dirty_clear(0);
	if (err)
		return fail("gw_soft_dirty_clear(self): %s", strerror(-err));
	own[2 * PAGE] = 2;
	supported = gw_soft_dirty_supported();
	if (supported < 0)
		return fail("gw_soft_dirty_supported: %s", strerror(-supported));
	if (!supported)
		return fail("gw_soft_dirty_supported() says this kernel has no soft-dirty tracking");
	err = gw_pagemap_read(0, (uintptr_t)own, 4, flags, GW_PM_SOFT_DIRTY);
	if (err)
		return fail("gw_pagemap_read(self): %s", strerror(-err));
	if (flags[0] || flags[1] || flags[2] != GW_PM_SOFT_DIRTY || flags[3])
		return fail("after clearing this process's bits and writing page 2, the probe found "
			    "%u %u %u %u, not 0 0 %u 0", flags[0], flags[1], flags[2], flags[3], GW_PM_SOFT_DIRTY);
	munmap(own, 4 * PAGE);
	printf("softdirty probe: supported, this process's bits untouched\n");
	return 0;
}

/* As /init: the file systems the checks need. */
static int mount_as_init(void)
{
	if (mount("proc", "/proc", "proc", 0, NULL) != 0)
		return fail("cannot mount /proc: %s", strerror(errno));
	if (mount("tmpfs", "/shm", "tmpfs", 0, "mode=1777") != 0)
		return fail("cannot mount /shm: %s", strerror(errno));
	return 0;
}

int main(void)
{
	int init = getpid() == 1;
	int err = init ? mount_as_init() : 0;

	err = err || check_probe() || check_tracking(init ? "/shm" : "/dev/shm");
	if (err)
		printf("gangway-softdirty FAIL %s\n", why);
	else
		printf("gangway-softdirty ok %u pages\n", (uint32_t)RAM_PAGES);
	fflush(stdout);
	if (init) {
		/* Init must not return; QEMU's -no-reboot turns the reset into its exit. */
		reboot(RB_AUTOBOOT);
		for (;;)
			pause();
	}
	return err ? 1 : 0;
}
