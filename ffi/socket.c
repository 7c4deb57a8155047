/*
 * TCP sockets of this process found by their ports, since Deno gives a
 * program no descriptor for its listeners or connections, TLS ones
 * included: a listener's TCP_NODELAY (without it a target's first answer
 * after a TLS handshake waited for a delayed acknowledgement, 40-90 ms; an
 * accepted socket takes the option from its listener), what the kernel
 * measured of a connection (its delivery rate, the bytes still on their way),
 * and a connection's send buffer.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <linux/tcp.h> /* the kernel's tcp_info: glibc's lacks the delivery rate */
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h> /* SIOCOUTQ */
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

/* The port of an IPv4 or IPv6 address, or 0. */
static uint16_t address_port(const struct sockaddr_storage *addr)
{
	if (addr->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)addr)->sin_port);
	if (addr->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)addr)->sin6_port);
	return 0;
}

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
	return address_port(&addr);
}

/* The ports of a TCP socket's two ends (the peer's 0 if it is not connected). */
static void end_ports(int fd, uint16_t *local, uint16_t *peer)
{
	struct sockaddr_storage addr;
	socklen_t len = sizeof(addr);

	*local = bound_port(fd);
	*peer = *local && getpeername(fd, (struct sockaddr *)&addr, &len) == 0 ? address_port(&addr) : 0;
}

/* The next descriptor of /proc/self/fd opened as fds (its own left out), or -1 at the end. */
static int next_fd(DIR *fds)
{
	struct dirent *entry;

	while ((entry = readdir(fds))) {
		char *end;
		long fd = strtol(entry->d_name, &end, 10);

		if (!*end && end != entry->d_name && fd != dirfd(fds))
			return (int)fd;
	}
	return -1;
}

GW_EXPORT int gw_listener_nodelay(uint16_t port)
{
	DIR *fds = opendir("/proc/self/fd");
	int fd, set = 0;

	if (!fds)
		return -errno;
	while ((fd = next_fd(fds)) >= 0) {
		int listening = 0, one = 1;
		socklen_t len = sizeof(listening);

		if (bound_port(fd) != port)
			continue;
		if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening)
			continue;
		if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0)
			set++;
	}
	closedir(fds);
	return set;
}

/*
 * A connected TCP socket of this process, found by its two ports.
 * Returns the descriptor, -ENOENT if none has those ports, or -EEXIST if
 * more than one does (the caller cannot tell which is its own).
 */
GW_EXPORT int gw_socket_find(uint16_t local_port, uint16_t peer_port)
{
	DIR *fds = opendir("/proc/self/fd");
	int fd, found = -ENOENT;

	if (!fds)
		return -errno;
	while (found != -EEXIST && (fd = next_fd(fds)) >= 0) {
		uint16_t local, peer;

		end_ports(fd, &local, &peer);
		if (local == local_port && peer == peer_port)
			found = found == -ENOENT ? fd : -EEXIST;
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
 * sample was application-limited, out[2] the bytes written to the socket
 * that the peer has not acknowledged yet, sent or not (SIOCOUTQ): what is
 * still on its way. Returns 0, -ESTALE if the descriptor is no longer that
 * connection, or -errno.
 */
GW_EXPORT int gw_socket_measure(int32_t fd, uint16_t local_port, uint16_t peer_port, uint64_t *out)
{
	struct tcp_info info;
	socklen_t len = sizeof(info);
	uint16_t local, peer;
	int unacknowledged = 0;

	end_ports(fd, &local, &peer);
	if (local != local_port || peer != peer_port)
		return -ESTALE;
	memset(&info, 0, sizeof(info));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) < 0)
		return -errno;
	if (ioctl(fd, SIOCOUTQ, &unacknowledged) < 0)
		unacknowledged = 0; /* a listening socket only: the rate still counts */
	out[0] = info.tcpi_delivery_rate;
	out[1] = info.tcpi_delivery_rate_app_limited;
	out[2] = unacknowledged > 0 ? (uint64_t)unacknowledged : 0;
	return 0;
}

/* The `field`th number (from 0) of a file under /proc/sys, or 0 if it cannot be read. */
static long sysctl_number(const char *path, int field)
{
	char text[64], *at = text;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;
	long value = 0;

	if (fd < 0)
		return 0;
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	text[n] = 0;
	for (int i = 0; i <= field; i++)
		value = strtol(at, &at, 10);
	return value;
}

/*
 * Gives a connection found by gw_socket_find a send buffer of `bytes` (the
 * kernel doubles the figure for its bookkeeping, and keeps it fixed from
 * then on) unless it holds that much already, or the kernel's own sizing
 * may grow it that far (net.ipv4.tcp_wmem's limit: a host tuned for long
 * links keeps its tuning). Past net.core.wmem_max only with CAP_NET_ADMIN
 * (SO_SNDBUFFORCE); a process without it keeps the kernel's sizing, which
 * a smaller fixed buffer would only limit.
 * Returns the buffer's size afterwards, -ESTALE if the descriptor is no
 * longer that connection, or -errno.
 */
GW_EXPORT int gw_socket_send_buffer(int32_t fd, uint16_t local_port, uint16_t peer_port, int32_t bytes)
{
	int size = 0;
	socklen_t len = sizeof(size);
	uint16_t local, peer;

	end_ports(fd, &local, &peer);
	if (local != local_port || peer != peer_port)
		return -ESTALE;
	if (bytes <= 0)
		return -EINVAL;
	if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, &len) < 0)
		return -errno;
	if (size >= 2 * (long)bytes || sysctl_number("/proc/sys/net/ipv4/tcp_wmem", 2) >= 2 * (long)bytes)
		return size;
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof(bytes)) < 0) {
		if (errno != EPERM)
			return -errno;
		if (sysctl_number("/proc/sys/net/core/wmem_max", 0) < bytes)
			return size;
		if (setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes)) < 0)
			return -errno;
	}
	len = sizeof(size);
	if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, &len) < 0)
		return -errno;
	return size;
}
