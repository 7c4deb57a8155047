/*
 * The CPU priority of every thread of this process. Linux keeps a nice
 * value per thread, and setpriority(PRIO_PROCESS, 0, n) changes only the
 * caller's: threads that exist already keep theirs, and among them are
 * Deno's threads for blocking calls, where zstd runs (a compression in
 * flight waited behind the guests' vCPUs while the sender's thread had the
 * gang's weight). Threads made later inherit their maker's.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "internal.h"

GW_EXPORT int gw_set_thread_priorities(int32_t nice)
{
	DIR *dir = opendir("/proc/self/task");
	struct dirent *entry;
	int changed = 0;
	int err = 0;

	if (!dir)
		return -errno;
	while ((entry = readdir(dir)) != NULL) {
		char *end;
		long tid = strtol(entry->d_name, &end, 10);

		if (*end != '\0' || tid <= 0)
			continue; /* "." and ".." */
		if (setpriority(PRIO_PROCESS, (id_t)tid, nice) == 0)
			changed++;
		else if (errno != ESRCH) /* a thread that ended meanwhile is no failure */
			err = -errno;
	}
	closedir(dir);
	return err ? err : changed;
}
