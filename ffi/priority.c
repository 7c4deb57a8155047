/*
 * The CPU priority of every thread of a process: this one, or another one
 * (a QEMU whose guest is switching over). Linux keeps a nice value per
 * thread, and setpriority(PRIO_PROCESS, 0, n) changes only the caller's:
 * threads that exist already keep theirs (when zstd ran on Deno's threads
 * for blocking calls, a compression in flight waited behind the guests'
 * vCPUs while the sender's thread had the gang's weight). Threads made
 * later, such as the compression jobs', inherit their maker's.
 *
 * A priority here is a nice value and a time slice. The weight a nice
 * value gives is a share of the CPU over time, not a prompt start: a
 * thread that wakes still waits for a busy core's current thread to end
 * its slice, 1.4 ms by default on two cores, and the migration's threads
 * wake thousands of times a round (a gang of 24 on two cores: 0.3-0.6 ms
 * a wake-up, 1.8 s of the sender's round 1). Since Linux 6.12 a thread
 * with a shorter slice than the running one takes the core at once on
 * waking (sched_attr.sched_runtime of a fair thread; EEVDF); older
 * kernels ignore it.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <linux/sched.h> /* SCHED_FLAG_RESET_ON_FORK */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

/* The kernel's struct sched_attr (include/uapi/linux/sched/types.h), its first version. */
struct sched_attr_v1 {
	uint32_t size;
	uint32_t sched_policy;
	uint64_t sched_flags;
	int32_t sched_nice;
	uint32_t sched_priority;
	uint64_t sched_runtime;
	uint64_t sched_deadline;
	uint64_t sched_period;
};

/* Threads already set by this call: a thread made during a pass is set by the next. */
struct seen {
	long *tids;
	size_t count, room;
};

static int seen_before(struct seen *seen, long tid)
{
	for (size_t i = 0; i < seen->count; i++)
		if (seen->tids[i] == tid)
			return 1;
	if (seen->count == seen->room) {
		size_t room = seen->room ? 2 * seen->room : 64;
		long *grown = realloc(seen->tids, room * sizeof(*grown));

		if (!grown)
			return 0; /* set again on the next pass: harmless */
		seen->tids = grown;
		seen->room = room;
	}
	seen->tids[seen->count++] = tid;
	return 0;
}

/*
 * One thread's nice value and, for a thread of the fair class, its slice
 * (0: the kernel's default). Falls back to the nice value alone where
 * sched_setattr() is missing or refuses; 0 or -errno.
 */
static int set_thread(long tid, int32_t nice, uint32_t slice_us)
{
	struct sched_attr_v1 attr;

	memset(&attr, 0, sizeof(attr));
	if (syscall(SYS_sched_getattr, (pid_t)tid, &attr, sizeof(attr), 0) == 0 &&
	    (attr.sched_policy == SCHED_OTHER || attr.sched_policy == SCHED_BATCH)) {
		attr.size = sizeof(attr);
		attr.sched_flags &= SCHED_FLAG_RESET_ON_FORK; /* kept as the thread had it; nothing else asked */
		attr.sched_nice = nice;
		attr.sched_runtime = (uint64_t)slice_us * 1000;
		if (syscall(SYS_sched_setattr, (pid_t)tid, &attr, 0) == 0)
			return 0;
		if (errno == ESRCH)
			return -errno;
	}
	return setpriority(PRIO_PROCESS, (id_t)tid, nice) == 0 ? 0 : -errno;
}

/* One pass over the threads: how many it set, or -errno of a failure. */
static int set_pass(const char *tasks, int32_t nice, uint32_t slice_us, struct seen *seen, int *failed)
{
	DIR *dir = opendir(tasks);
	struct dirent *entry;
	int changed = 0;

	if (!dir)
		return -errno;
	for (;;) {
		char *end;
		long tid;
		int err;

		errno = 0;
		entry = readdir(dir);
		if (!entry)
			break;
		tid = strtol(entry->d_name, &end, 10);
		if (*end != '\0' || tid <= 0)
			continue; /* "." and ".." */
		if (seen_before(seen, tid))
			continue;
		err = set_thread(tid, nice, slice_us);
		if (err == 0)
			changed++;
		else if (err != -ESRCH) /* a thread that ended meanwhile is no failure */
			*failed = err;
		errno = 0;
	}
	if (errno != 0)
		*failed = -errno; /* readdir failed: not the end of the list */
	closedir(dir);
	return changed;
}

GW_EXPORT int gw_set_thread_priorities(int32_t pid, int32_t nice, uint32_t slice_us)
{
	struct seen seen = { 0 };
	char tasks[32];
	int failed = 0;
	int total = 0;

	if (pid < 0)
		return -EINVAL;
	if (pid == 0)
		snprintf(tasks, sizeof(tasks), "/proc/self/task");
	else
		snprintf(tasks, sizeof(tasks), "/proc/%d/task", pid);

	/* Again until a pass finds no thread it has not set: a thread made meanwhile took its maker's. */
	for (int pass = 0; pass < 8; pass++) {
		int changed = set_pass(tasks, nice, slice_us, &seen, &failed);

		if (changed < 0) {
			free(seen.tids);
			return changed;
		}
		total += changed;
		if (changed == 0)
			break;
	}
	free(seen.tids);
	return failed ? failed : total;
}
