/*
 * The CPU priority of every thread of a process: this one, or another one
 * (a QEMU whose guest is switching over). Linux keeps a nice value per
 * thread, and setpriority(PRIO_PROCESS, 0, n) changes only the caller's:
 * threads that exist already keep theirs (when zstd ran on Deno's threads
 * for blocking calls, a compression in flight waited behind the guests'
 * vCPUs while the sender's thread had the gang's weight). Threads made
 * later, such as the compression jobs', inherit their maker's.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "internal.h"

/* One pass over the threads: how many it changed, or -errno of a failure. */
static int set_pass(const char *tasks, int32_t nice, int *failed)
{
	DIR *dir = opendir(tasks);
	struct dirent *entry;
	int changed = 0;

	if (!dir)
		return -errno;
	for (;;) {
		char *end;
		long tid;

		errno = 0;
		entry = readdir(dir);
		if (!entry)
			break;
		tid = strtol(entry->d_name, &end, 10);
		if (*end != '\0' || tid <= 0)
			continue; /* "." and ".." */
		errno = 0;
		if (getpriority(PRIO_PROCESS, (id_t)tid) == nice && errno == 0)
			continue;
		if (setpriority(PRIO_PROCESS, (id_t)tid, nice) == 0)
			changed++;
		else if (errno != ESRCH) /* a thread that ended meanwhile is no failure */
			*failed = -errno;
	}
	if (errno != 0)
		*failed = -errno; /* readdir failed: not the end of the list */
	closedir(dir);
	return changed;
}

GW_EXPORT int gw_set_thread_priorities(int32_t pid, int32_t nice)
{
	char tasks[32];
	int failed = 0;
	int total = 0;

	if (pid < 0)
		return -EINVAL;
	if (pid == 0)
		snprintf(tasks, sizeof(tasks), "/proc/self/task");
	else
		snprintf(tasks, sizeof(tasks), "/proc/%d/task", pid);

	/* Again until a pass finds every thread set: a thread made meanwhile took its maker's. */
	for (int pass = 0; pass < 8; pass++) {
		int changed = set_pass(tasks, nice, &failed);

		if (changed < 0)
			return changed;
		total += changed;
		if (changed == 0)
			break;
	}
	return failed ? failed : total;
}
