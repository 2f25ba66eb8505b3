/*
 * Frame I/O shared by the kernel emulator, the library and the self-test.
 * Deliberately free of read()/write()/close() by name: the library
 * exports close() itself, and these helpers must never land there.
 */
#include <sys/socket.h>
#include <sys/uio.h>

#include <errno.h>
#include <string.h>

#include "emu_wire.h"

int
emu_read_full(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;
	ssize_t n;

	while (len > 0) {
		n = recv(fd, p, len, 0);
		if (n == 0) {
			errno = EPIPE;
			return (-1);
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return (-1);
		}
		p += n;
		len -= (size_t)n;
	}
	return (0);
}

int
emu_write_full(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	ssize_t n;

	while (len > 0) {
		n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return (-1);
		}
		p += n;
		len -= (size_t)n;
	}
	return (0);
}

/* One header and up to two body parts, in as few sends as can be. */
int
emu_send(int fd, uint32_t op, int32_t status, const void *b1, size_t l1,
    const void *b2, size_t l2)
{
	struct iovec body[2] = {
		{ .iov_base = (void *)b1, .iov_len = l1 },
		{ .iov_base = (void *)b2, .iov_len = l2 },
	};

	return (emu_sendv(fd, op, status, body, 2));
}

#define	EMU_MAX_IOV	4

int
emu_sendv(int fd, uint32_t op, int32_t status, const struct iovec *body,
    int n)
{
	struct emu_hdr h = { .op = op, .status = status, .len = 0 };
	struct iovec iov[EMU_MAX_IOV + 1];
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 1 };
	ssize_t sent;
	size_t left;
	int i;

	if (n > EMU_MAX_IOV) {
		errno = EINVAL;
		return (-1);
	}
	iov[0].iov_base = &h;
	iov[0].iov_len = sizeof(h);
	for (i = 0; i < n; i++) {
		iov[i + 1] = body[i];
		h.len += body[i].iov_len;
	}
	msg.msg_iovlen = (size_t)n + 1;
	left = sizeof(h) + h.len;
	while (left > 0) {
		sent = sendmsg(fd, &msg, MSG_NOSIGNAL);
		if (sent < 0) {
			if (errno == EINTR)
				continue;
			return (-1);
		}
		left -= (size_t)sent;
		/* A short send: step past what went out. */
		while (sent > 0 && msg.msg_iovlen > 0) {
			if ((size_t)sent >= msg.msg_iov->iov_len) {
				sent -= (ssize_t)msg.msg_iov->iov_len;
				msg.msg_iov++;
				msg.msg_iovlen--;
			} else {
				msg.msg_iov->iov_base =
				    (uint8_t *)msg.msg_iov->iov_base + sent;
				msg.msg_iov->iov_len -= (size_t)sent;
				sent = 0;
			}
		}
	}
	return (0);
}

int
emu_recv_hdr(int fd, struct emu_hdr *h)
{
	if (emu_read_full(fd, h, sizeof(*h)) != 0)
		return (-1);
	if (h->len > EMU_MAX_BODY) {
		errno = EPROTO;
		return (-1);
	}
	return (0);
}

int
emu_skip(int fd, uint64_t len)
{
	uint8_t buf[4096];
	size_t n;

	while (len > 0) {
		n = len < sizeof(buf) ? (size_t)len : sizeof(buf);
		if (emu_read_full(fd, buf, n) != 0)
			return (-1);
		len -= n;
	}
	return (0);
}
