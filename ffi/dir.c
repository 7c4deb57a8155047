/*
 * Target directories: a receiver holds an exclusive lock on its directory
 * so that two receivers never write the same guests' files.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include "internal.h"

GW_EXPORT int gw_dir_lock(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (access(path, W_OK) < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

GW_EXPORT int gw_dir_unlock(int fd)
{
	return close(fd) < 0 ? -errno : 0;
}
