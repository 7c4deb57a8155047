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
#include <linux/tcp.h> /* the kernel's tcp_info: glibc's lacks the delivery rate */
#include <stdlib.h>
#include <string.h>
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

/* The ports of a TCP socket's two ends (0 for either if it is not a connected TCP socket of IPv4 or IPv6). */
static void end_ports(int fd, uint16_t *local, uint16_t *peer)
{
	struct sockaddr_storage addr;
	socklen_t len = sizeof(addr);

	*local = bound_port(fd);
	*peer = 0;
	if (!*local || getpeername(fd, (struct sockaddr *)&addr, &len) < 0)
		return;
	if (addr.ss_family == AF_INET)
		*peer = ntohs(((struct sockaddr_in *)&addr)->sin_port);
	else if (addr.ss_family == AF_INET6)
		*peer = ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
}

/*
 * A connected TCP socket of this process, found by its two ports: Deno
 * gives a program no descriptor for its connections, TLS ones included.
 * Returns the descriptor, -ENOENT if none has those ports, or -EEXIST if
 * more than one does (the caller cannot tell which is its own).
 */
GW_EXPORT int gw_socket_find(uint16_t local_port, uint16_t peer_port)
{
	DIR *fds = opendir("/proc/self/fd");
	struct dirent *entry;
	int found = -ENOENT;

	if (!fds)
		return -errno;
	while ((entry = readdir(fds))) {
		char *end;
		long fd = strtol(entry->d_name, &end, 10);
		uint16_t local, peer;

		if (*end || end == entry->d_name || fd == dirfd(fds))
			continue;
		end_ports((int)fd, &local, &peer);
		if (local != local_port || peer != peer_port)
			continue;
		found = found == -ENOENT ? (int)fd : -EEXIST;
		if (found == -EEXIST)
			break;
	}
	closedir(fds);
	return found;
}

/*
 * What the kernel measured of a connection found by gw_socket_find (its
 * ports are checked again: the descriptor may have been closed and reused):
 * out[0] the latest delivery rate in bytes per second (an application-
 * limited sample replaces the rate only when higher, so while a sender
 * leaves the link idle it still reads what bursts reached), out[1] 1 if that
 * sample was application-limited, out[2] bytes written and not sent yet.
 * Returns 0, -ESTALE if the descriptor is no longer that connection, or
 * -errno.
 */
GW_EXPORT int gw_socket_rate(int32_t fd, uint16_t local_port, uint16_t peer_port, uint64_t *out)
{
	struct tcp_info info;
	socklen_t len = sizeof(info);
	uint16_t local, peer;

	end_ports(fd, &local, &peer);
	if (local != local_port || peer != peer_port)
		return -ESTALE;
	memset(&info, 0, sizeof(info));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) < 0)
		return -errno;
	out[0] = info.tcpi_delivery_rate;
	out[1] = info.tcpi_delivery_rate_app_limited;
	out[2] = info.tcpi_notsent_bytes;
	return 0;
}
