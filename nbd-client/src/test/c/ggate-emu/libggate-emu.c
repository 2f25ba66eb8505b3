/*
 * libggate-emu.so: open(), ioctl() and close() as FreeBSD's libc would
 * give them to a GEOM Gate daemon, with /dev/ggctl played by the
 * ggate-kernel emulator over a Unix socket.
 *
 * The Java binding loads this library explicitly through JNR (it is never
 * LD_PRELOADed) and calls exactly these three symbols; everything else in
 * here is hidden (-fvisibility=hidden), so nothing the JVM resolves on
 * its own can land in it.
 *
 * Which paths are emulated:
 *   - "/dev/ggctl", when the environment names the emulator's socket in
 *     GGATE_EMU_SOCKET;
 *   - any path that is itself a Unix socket (the Java tests point
 *     -Dnbd.ggate.ctl at the socket, since a JVM cannot set its own
 *     environment).
 * Every other path, and any descriptor that did not come from an
 * emulated open(), goes to the real system calls, so the library behaves
 * as the C library would for them (on Linux, "/dev/ggctl" without the
 * variable fails with ENOENT, as on a FreeBSD without geom_gate).
 *
 * Concurrency: a FreeBSD descriptor of /dev/ggctl may be used by many
 * threads at once, and ggatec does exactly that (one thread blocked in
 * START, another calling DONE on the same descriptor).  So a descriptor
 * here is a pool of connections: each ioctl takes an idle connection (or
 * makes one), uses it alone for its request and reply, and gives it back.
 * A blocked START holds one connection; a concurrent DONE gets another.
 * The descriptor number open() returns is the pool's first connection.
 *
 * Signals do not interrupt a call: an interrupted socket read is simply
 * retried, as a FreeBSD ioctl sleeping with PCATCH would be restarted for
 * an SA_RESTART handler.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "emu_wire.h"
#include "ggate_abi.h"

#define	EXPORT		__attribute__((visibility("default")))
#define	MAX_IDLE	64	/* idle connections kept per descriptor */
#define	EAGER_MAX	(16 << 20)	/* largest READ payload sent unasked */

struct emu_file {
	int		fd;		/* the number open() returned */
	char		path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	bool		cloexec;
	pthread_mutex_t	lock;		/* guards everything below */
	int		refs;		/* the table's, plus calls under way */
	bool		closed;
	int		nidle;
	int		idle[MAX_IDLE];
};

/* Descriptor -> emu_file; descriptors are small numbers, so an array. */
static pthread_mutex_t	table_lock = PTHREAD_MUTEX_INITIALIZER;
static struct emu_file	**table;
static size_t		table_len;

/*
 * The real system calls.  Called by number: this library's own open(),
 * ioctl() and close() are exactly the names we must not reach.
 */
static int
sys_open(const char *path, int flags, mode_t mode)
{
	return ((int)syscall(SYS_openat, AT_FDCWD, path, flags, mode));
}

static int
sys_ioctl(int fd, unsigned long req, void *arg)
{
	return ((int)syscall(SYS_ioctl, fd, req, arg));
}

static int
sys_close(int fd)
{
	return ((int)syscall(SYS_close, fd));
}

/* The emulator socket for `path`, or NULL when the path is not emulated. */
static const char *
emu_target(const char *path)
{
	struct stat sb;
	const char *env;

	if (path == NULL)
		return (NULL);
	if (strcmp(path, G_GATE_CTL_PATH) == 0) {
		env = getenv("GGATE_EMU_SOCKET");
		return (env != NULL && env[0] != '\0' ? env : NULL);
	}
	if (stat(path, &sb) == 0 && S_ISSOCK(sb.st_mode))
		return (path);
	return (NULL);
}

/* A new connection to the emulator, or -1 with errno. */
static int
emu_connect(const char *path, bool cloexec)
{
	struct sockaddr_un sun;
	int s, saved;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		errno = ENAMETOOLONG;
		return (-1);
	}
	strcpy(sun.sun_path, path);
	s = socket(AF_UNIX, SOCK_STREAM | (cloexec ? SOCK_CLOEXEC : 0), 0);
	if (s < 0)
		return (-1);
	if (connect(s, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
		saved = errno;
		sys_close(s);
		/* The "device" is not there: what a vanished cdev answers. */
		errno = (saved == ECONNREFUSED || saved == ENOENT) ? ENXIO :
		    saved;
		return (-1);
	}
	return (s);
}

static int
table_put(int fd, struct emu_file *f)
{
	struct emu_file **nt;
	size_t nlen;

	pthread_mutex_lock(&table_lock);
	if ((size_t)fd >= table_len) {
		nlen = table_len == 0 ? 64 : table_len;
		while (nlen <= (size_t)fd)
			nlen *= 2;
		nt = realloc(table, nlen * sizeof(*nt));
		if (nt == NULL) {
			pthread_mutex_unlock(&table_lock);
			errno = ENOMEM;
			return (-1);
		}
		memset(nt + table_len, 0, (nlen - table_len) * sizeof(*nt));
		table = nt;
		table_len = nlen;
	}
	table[fd] = f;
	pthread_mutex_unlock(&table_lock);
	return (0);
}

/* The file behind `fd` with a reference taken, or NULL when not ours. */
static struct emu_file *
file_hold(int fd)
{
	struct emu_file *f = NULL;

	pthread_mutex_lock(&table_lock);
	if (fd >= 0 && (size_t)fd < table_len)
		f = table[fd];
	if (f != NULL) {
		pthread_mutex_lock(&f->lock);
		f->refs++;
		pthread_mutex_unlock(&f->lock);
	}
	pthread_mutex_unlock(&table_lock);
	return (f);
}

static void
file_release(struct emu_file *f)
{
	bool last;

	pthread_mutex_lock(&f->lock);
	last = --f->refs == 0;
	pthread_mutex_unlock(&f->lock);
	if (last) {
		pthread_mutex_destroy(&f->lock);
		free(f);
	}
}

/* An idle connection of the file, or a new one. */
static int
conn_get(struct emu_file *f)
{
	int s = -1;

	pthread_mutex_lock(&f->lock);
	if (f->nidle > 0)
		s = f->idle[--f->nidle];
	pthread_mutex_unlock(&f->lock);
	if (s < 0)
		s = emu_connect(f->path, true);
	return (s);
}

/* Gives a connection back, or closes it: broken, surplus, or file closed. */
static void
conn_put(struct emu_file *f, int s, bool healthy)
{
	pthread_mutex_lock(&f->lock);
	if (healthy && !f->closed && f->nidle < MAX_IDLE) {
		f->idle[f->nidle++] = s;
		s = -1;
	}
	pthread_mutex_unlock(&f->lock);
	if (s >= 0)
		sys_close(s);
}

/*
 * One ioctl over connection `s`: send the request and the struct, serve
 * the kernel's copyout/copyin requests against our address space, and
 * take the reply.  Returns the errno the ioctl ends with (0 for success),
 * and clears *healthy when the connection can no longer be trusted.
 */
static int
emu_call(int s, unsigned long req, void *arg, bool *healthy)
{
	uint8_t inbuf[FB_IOCPARM_MAX], meta[16];
	struct g_gate_ctl_io io;
	struct iovec body[3];
	struct emu_hdr h;
	uint32_t com;
	size_t size;
	uint64_t uaddr, n;
	int32_t ack;

	/* As FreeBSD's kern_ioctl sizes the argument (IOCPARM_LEN). */
	com = (uint32_t)req;
	size = 0;
	if ((com & FB_IOC_VOID) == 0 && (com & FB_IOC_INOUT) != 0)
		size = FB_IOCPARM_LEN(com);
	if (size > 0 && arg == NULL)
		return (EFAULT);
	if ((com & FB_IOC_IN) != 0)
		memcpy(inbuf, arg, size);
	else
		memset(inbuf, 0, size);	/* IOC_OUT only: the kernel zeroes */

	emu_put64(meta, (uint64_t)req);	/* all 64 bits: the kernel warns */
	body[0] = (struct iovec){ .iov_base = meta, .iov_len = 8 };
	body[1] = (struct iovec){ .iov_base = inbuf, .iov_len = size };
	body[2] = (struct iovec){ .iov_base = NULL, .iov_len = 0 };
	/*
	 * DONE of a READ: the kernel is about to copyin() the data, so send
	 * what gctl_length says along, and save it a round trip.  It uses
	 * the bytes only if they cover its own bio_length, and asks with a
	 * COPYIN otherwise, so the semantics stay the kernel's.
	 */
	if (com == G_GATE_CMD_DONE) {
		memcpy(&io, inbuf, sizeof(io));
		if (io.gctl_cmd == BIO_READ && io.gctl_error == 0 &&
		    io.gctl_data != 0 && io.gctl_length > 0 &&
		    io.gctl_length <= EAGER_MAX) {
			body[2].iov_base = (void *)(uintptr_t)io.gctl_data;
			body[2].iov_len = (size_t)io.gctl_length;
		}
	}
	if (emu_sendv(s, EMU_OP_IOCTL, 0, body, 3) != 0)
		goto broken;
	for (;;) {
		if (emu_recv_hdr(s, &h) != 0)
			goto broken;
		switch (h.op) {
		case EMU_OP_COPYOUT:
			/* copyout(kaddr, uaddr, n): the data lands in our memory. */
			if (h.len < 8 || emu_read_full(s, meta, 8) != 0)
				goto broken;
			uaddr = emu_get64(meta);
			n = h.len - 8;
			ack = 0;
			if (uaddr == 0) {
				if (emu_skip(s, n) != 0)
					goto broken;
				ack = EFAULT;
			} else if (emu_read_full(s, (void *)(uintptr_t)uaddr,
			    (size_t)n) != 0) {
				/* A bad address leaves the stream unusable. */
				goto broken;
			}
			if (emu_send(s, EMU_OP_COPYOUT_ACK, ack, NULL, 0, NULL,
			    0) != 0)
				goto broken;
			break;
		case EMU_OP_COPYIN:
			/* copyin(uaddr, kaddr, n): send our memory over. */
			if (h.len != 16 || emu_read_full(s, meta, 16) != 0)
				goto broken;
			uaddr = emu_get64(meta);
			n = emu_get64(meta + 8);
			if (uaddr == 0 && n > 0) {
				if (emu_send(s, EMU_OP_COPYIN_DATA, EFAULT, NULL,
				    0, NULL, 0) != 0)
					goto broken;
			} else if (emu_send(s, EMU_OP_COPYIN_DATA, 0,
			    (const void *)(uintptr_t)uaddr, (size_t)n, NULL,
			    0) != 0)
				goto broken;
			break;
		case EMU_OP_IOCTL_REPLY:
			if (h.status != 0) {
				if (emu_skip(s, h.len) != 0)
					goto broken;
				return (h.status);
			}
			if (h.len != size || emu_read_full(s, inbuf, size) != 0)
				goto broken;
			/* Copied out only on success, as kern_ioctl does. */
			if ((com & FB_IOC_OUT) != 0)
				memcpy(arg, inbuf, size);
			return (0);
		default:
			goto broken;
		}
	}
broken:
	*healthy = false;
	return (ENXIO);
}

EXPORT int
open(const char *path, int flags, ...)
{
	struct emu_file *f;
	const char *target;
	mode_t mode = 0;
	va_list ap;
	int s;

	if ((flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE) {
		va_start(ap, flags);
		mode = (mode_t)va_arg(ap, int);
		va_end(ap);
	}
	target = emu_target(path);
	if (target == NULL)
		return (sys_open(path, flags, mode));

	f = calloc(1, sizeof(*f));
	if (f == NULL) {
		errno = ENOMEM;
		return (-1);
	}
	if (strlen(target) >= sizeof(f->path)) {
		free(f);
		errno = ENAMETOOLONG;
		return (-1);
	}
	strcpy(f->path, target);
	f->cloexec = (flags & O_CLOEXEC) != 0;
	s = emu_connect(f->path, f->cloexec);
	if (s < 0) {
		free(f);
		return (-1);
	}
	pthread_mutex_init(&f->lock, NULL);
	f->fd = s;
	f->refs = 1;
	f->idle[f->nidle++] = s;
	if (table_put(s, f) != 0) {
		sys_close(s);
		pthread_mutex_destroy(&f->lock);
		free(f);
		return (-1);
	}
	return (s);
}

EXPORT int
ioctl(int fd, unsigned long req, ...)
{
	struct emu_file *f;
	bool healthy;
	va_list ap;
	void *arg;
	int s, error;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);

	f = file_hold(fd);
	if (f == NULL)
		return (sys_ioctl(fd, req, arg));
	s = conn_get(f);
	if (s < 0) {
		error = errno;
		file_release(f);
		errno = error;
		return (-1);
	}
	healthy = true;
	error = emu_call(s, req, arg, &healthy);
	conn_put(f, s, healthy);
	file_release(f);
	if (error != 0) {
		errno = error;
		return (-1);
	}
	return (0);
}

EXPORT int
close(int fd)
{
	struct emu_file *f = NULL;
	int idle[MAX_IDLE], nidle, i;

	pthread_mutex_lock(&table_lock);
	if (fd >= 0 && (size_t)fd < table_len) {
		f = table[fd];
		table[fd] = NULL;
	}
	pthread_mutex_unlock(&table_lock);
	if (f == NULL)
		return (sys_close(fd));

	/*
	 * Idle connections go now; one still in a call (a blocked START)
	 * goes when that call returns, as a FreeBSD file stays referenced by
	 * an ioctl in progress.  Until then its number stays allocated, so it
	 * cannot be handed out again under the caller's feet.
	 */
	pthread_mutex_lock(&f->lock);
	f->closed = true;
	nidle = f->nidle;
	memcpy(idle, f->idle, sizeof(idle[0]) * (size_t)nidle);
	f->nidle = 0;
	pthread_mutex_unlock(&f->lock);
	for (i = 0; i < nidle; i++)
		sys_close(idle[i]);
	file_release(f);
	return (0);
}
