/*
 * A listening TCP socket's options, found by its port: Deno's TLS listener
 * gives a program neither its socket nor a way to set TCP_NODELAY, and
 * without it a target's first answer after a TLS handshake waited for a
 * delayed acknowledgement (40-90 ms). An accepted socket takes TCP_NODELAY
 * from its listening socket.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "internal.h"

/* The port a socket is bound to, or 0 if it is no TCP socket of IPv4 or IPv6. */
static uint16_t bound_port(int fd)
{
	struct sockaddr_storage addr;
	socklen_t len = sizeof(addr);
	int type = 0;
	socklen_t type_len = sizeof(type);

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) < 0 || type != SOCK_STREAM)
		return 0;
	if (getsockname(fd, (struct sockaddr *)&addr, &len) < 0)
		return 0;
	if (addr.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&addr)->sin_port);
	if (addr.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
	return 0;
}

GW_EXPORT int gw_listener_nodelay(uint16_t port)
{
	DIR *fds = opendir("/proc/self/fd");
	struct dirent *entry;
	int set = 0;

	if (!fds)
		return -errno;
	while ((entry = readdir(fds))) {
		char *end;
		long fd = strtol(entry->d_name, &end, 10);
		int listening = 0, one = 1;
		socklen_t len = sizeof(listening);

		if (*end || end == entry->d_name || fd == dirfd(fds))
			continue;
		if (bound_port((int)fd) != port)
			continue;
		if (getsockopt((int)fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening)
			continue;
		if (setsockopt((int)fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0)
			set++;
	}
	closedir(fds);
	return set;
}
