/*
 * Target directories: a receiver holds an exclusive lock on its directory
 * so that two receivers never write the same guests' files; and what a
 * directory is (owner, mode, real path) before a server trusts it. Deno
 * asks for --allow-all to stat or make anything under /dev, where /dev/shm
 * is: here a receiver with --allow-ffi can.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
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

GW_EXPORT int gw_dir_make(const char *path, uint32_t mode)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, len + 1);
	/* Each component in turn, as mkdir -p: one that exists already is kept as it is. */
	for (size_t i = 1; i <= len; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		buf[i] = '\0';
		if (mkdir(buf, (mode_t)mode) < 0 && errno != EEXIST)
			return -errno;
		buf[i] = i == len ? '\0' : '/';
	}
	return 0;
}

GW_EXPORT int gw_dir_info(const char *path, uint8_t *real, uint32_t cap, uint32_t *info)
{
	char resolved[PATH_MAX];
	struct stat st;
	size_t len;

	if (!realpath(path, resolved))
		return -errno;
	if (stat(resolved, &st) < 0)
		return -errno;
	len = strlen(resolved);
	if (len >= cap)
		return -ENAMETOOLONG;
	memcpy(real, resolved, len + 1);
	info[0] = (uint32_t)st.st_uid;
	info[1] = (uint32_t)st.st_mode;
	return (int)len;
}
