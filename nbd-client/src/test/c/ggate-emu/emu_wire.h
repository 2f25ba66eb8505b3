/*
 * The emulator's wire protocol: frames over a Unix stream socket between
 * the "kernel" (ggate-kernel) and its clients (libggate-emu.so and the
 * test-control clients).  README.md describes it byte by byte; this is
 * the C side of that description.
 *
 * Every frame is a 16-byte header, then `len` bytes of body.  All
 * integers are little-endian.
 */
#ifndef EMU_WIRE_H
#define EMU_WIRE_H

#include <sys/uio.h>

#include <stddef.h>
#include <stdint.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
    "the wire is little-endian and written from native integers");

#define	EMU_PROTO_VERSION	1
#define	EMU_MAX_BODY		(256u << 20)	/* sanity bound on a frame */

enum emu_op {
	/* The ioctl path (library <-> kernel). */
	EMU_OP_IOCTL		= 1,	/* c->s: u64 request, struct bytes */
	EMU_OP_COPYOUT		= 2,	/* s->c: u64 uaddr, data */
	EMU_OP_COPYOUT_ACK	= 3,	/* c->s: status 0 or EFAULT */
	EMU_OP_COPYIN		= 4,	/* s->c: u64 uaddr, u64 length */
	EMU_OP_COPYIN_DATA	= 5,	/* c->s: status 0 + data, or EFAULT */
	EMU_OP_IOCTL_REPLY	= 6,	/* s->c: status errno, struct if 0 */

	/* Test control (reply: same op, status, body). */
	EMU_OP_HELLO		= 32,
	EMU_OP_QUEUE_BIO	= 33,
	EMU_OP_AWAIT_BIO	= 34,
	EMU_OP_LIST_UNITS	= 35,
	EMU_OP_SET_ACCESS	= 36,
	EMU_OP_RUN_LOAD		= 37,
};

struct emu_hdr {
	uint32_t	op;
	int32_t		status;		/* errno of the host, 0 for none */
	uint64_t	len;		/* body bytes that follow */
};
_Static_assert(sizeof(struct emu_hdr) == 16, "emu_hdr is 16 bytes");

/*
 * Blocking helpers; they retry EINTR and never raise SIGPIPE.  They
 * return 0, or -1 with errno set (EPIPE when the peer closed).
 */
int	emu_read_full(int fd, void *buf, size_t len);
int	emu_write_full(int fd, const void *buf, size_t len);
int	emu_send(int fd, uint32_t op, int32_t status, const void *b1,
	    size_t l1, const void *b2, size_t l2);
int	emu_sendv(int fd, uint32_t op, int32_t status,
	    const struct iovec *body, int n);
int	emu_recv_hdr(int fd, struct emu_hdr *h);
int	emu_skip(int fd, uint64_t len);

/* Little-endian field access in a byte buffer. */
static inline void
emu_put32(uint8_t *p, uint32_t v)
{
	__builtin_memcpy(p, &v, 4);
}

static inline void
emu_put64(uint8_t *p, uint64_t v)
{
	__builtin_memcpy(p, &v, 8);
}

static inline uint32_t
emu_get32(const uint8_t *p)
{
	uint32_t v;

	__builtin_memcpy(&v, p, 4);
	return (v);
}

static inline uint64_t
emu_get64(const uint8_t *p)
{
	uint64_t v;

	__builtin_memcpy(&v, p, 8);
	return (v);
}

#endif /* !EMU_WIRE_H */
