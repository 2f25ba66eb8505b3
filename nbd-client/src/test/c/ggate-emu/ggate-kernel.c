/*
 * ggate-kernel: the kernel side of FreeBSD's GEOM Gate (g_gate.c), played
 * by a Linux process so that a GEOM Gate daemon can be tested without
 * FreeBSD.  It keeps the units and their bio queues, answers the
 * /dev/ggctl ioctls that libggate-emu.so forwards to it, and lets tests
 * stand in for GEOM's consumers (queue a bio, wait for it, list units,
 * open a provider, run a load).
 *
 *	usage: ggate-kernel [-v] [-i] [-o] socket-path
 *
 *	-v	log every ioctl on stderr
 *	-i	ignore standard input (by default, EOF there stops the server,
 *		so it never outlives the process that started it)
 *	-o	old kernel (FreeBSD 13 and before): GG_MODIFY_MEDIASIZE is
 *		validated, then refused with EOPNOTSUPP
 *
 * It prints "ready <socket-path>" on standard output once it listens, and
 * stops, removing the socket, on SIGTERM, SIGINT or SIGHUP.
 *
 * The semantics follow sys/geom/gate/g_gate.c of FreeBSD main; where the
 * emulator differs, a comment says so.  Errno values are the host's: the
 * daemon maps errno through the running platform anyway.
 *
 * Design: one thread per connection and one lock for all state.  A
 * thread sleeping in START is a FreeBSD thread in msleep("ggwait"); the
 * per-unit condition variable is wakeup(sc).  Simple beats fast here, and
 * it is still fast enough to benchmark a daemon against.
 */
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "emu_wire.h"
#include "ggate_abi.h"

#define	NSEC		1000000000ull
#define	GUARD_AGE	5	/* g_gate_guard: seconds before a bio times out */
#define	LOAD_MAX_DEPTH	65536

/* Returned by handlers whose connection died: drop it, answer nothing. */
#define	CONN_DEAD	(-1)

enum bio_where { Q_NONE, Q_IN, Q_OUT };
enum bio_owner { OWN_CTL, OWN_LOAD };

struct gg_load;

struct gg_bio {
	TAILQ_ENTRY(gg_bio)	b_queue;	/* unit's in or out queue */
	TAILQ_ENTRY(gg_bio)	b_ctl;		/* control bios, until awaited */
	enum bio_where		b_where;
	enum bio_owner		b_owner;
	int			b_cmd;
	int64_t			b_offset;
	int64_t			b_length;
	uint8_t			*b_data;	/* b_length bytes, READ/WRITE */
	uintptr_t		b_seq;		/* bio_driver1 */
	uint64_t		b_t0;		/* bio_t0, monotonic ns */
	int			b_error;
	bool			b_done;
	bool			b_awaited;	/* a control client is waiting */
	uint64_t		b_id;		/* control id */
	struct gg_load		*b_load;
};
TAILQ_HEAD(bioq, gg_bio);

struct gg_unit {
	int		u_unit;
	char		u_name[FB_NAME_MAX + 1];
	char		u_info[G_GATE_INFOSIZE];
	int64_t		u_mediasize;
	uint32_t	u_sectorsize;
	uint32_t	u_flags;		/* G_GATE_USERFLAGS */
	uint32_t	u_queue_size;		/* sc_queue_size: 0 = no limit */
	uint32_t	u_queue_count;		/* in + out, as sc_queue_count */
	uint32_t	u_nin, u_nout;
	uint32_t	u_timeout;
	uint64_t	u_next_guard;		/* ns; 0 when no guard */
	uintptr_t	u_seq;			/* next sequence number */
	int		u_refs;			/* g_gate_hold() */
	bool		u_destroying;		/* G_GATE_FLAG_DESTROY */
	int		u_acr, u_acw, u_ace;	/* provider access counts */
	struct bioq	u_inq, u_outq;
	pthread_cond_t	u_cv;			/* wakeup(sc) */
	pthread_cond_t	u_refcv;		/* wakeup(&sc->sc_ref) */
};

struct gg_load {
	int		l_unit;
	int		l_cmd;
	int64_t		l_length;
	bool		l_random;
	bool		l_running;
	bool		l_abandoned;		/* its client left; bios drain */
	uint64_t	l_rng;
	int64_t		l_next;			/* sequential offset */
	uint32_t	l_outstanding;		/* bios still ours */
	uint64_t	l_completed, l_errors, l_bytes;
	uint64_t	l_last_done;
	uint64_t	*l_lat;
	size_t		l_nlat, l_caplat;
	struct bioq	l_parked;		/* failed to queue; retried */
	pthread_cond_t	l_cv;
};

/* Everything below is guarded by gk_lock. */
static pthread_mutex_t	gk_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t	gk_ctl_cv;		/* a control bio completed */
static struct gg_unit	*gk_units[G_GATE_MAXUNITS];
static struct bioq	gk_ctl_bios = TAILQ_HEAD_INITIALIZER(gk_ctl_bios);
static uint64_t		gk_next_id = 1;
static uint64_t		gk_sign_warnings;	/* ioctls with bits above 31 */

static bool		gk_verbose;
static bool		gk_old_modify;
static const char	*gk_socket_path;

struct conn {
	int		fd;
	uint8_t		*in;		/* request body */
	size_t		incap;
	uint8_t		*out;		/* copyout staging and replies */
	size_t		outcap;
};

/* -------------------------------------------------------------------- */
/* Odds and ends. */

static void
gk_log(const char *fmt, ...)
{
	va_list ap;
	char buf[512];

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fprintf(stderr, "ggate-kernel: %s\n", buf);
}

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((uint64_t)ts.tv_sec * NSEC + (uint64_t)ts.tv_nsec);
}

static void
cond_init(pthread_cond_t *cv)
{
	pthread_condattr_t attr;

	/* Monotonic, so that deadlines ignore the wall clock. */
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(cv, &attr);
	pthread_condattr_destroy(&attr);
}

/* Waits on cv (gk_lock held) until `deadline` (monotonic ns). */
static int
cond_wait_until(pthread_cond_t *cv, uint64_t deadline)
{
	struct timespec ts = {
		.tv_sec = (time_t)(deadline / NSEC),
		.tv_nsec = (long)(deadline % NSEC),
	};

	return (pthread_cond_timedwait(cv, &gk_lock, &ts));
}

static bool
powerof2(uint64_t x)
{
	return (x != 0 && (x & (x - 1)) == 0);
}

/* Makes *buf hold at least `need` bytes; false when out of memory. */
static bool
grow(uint8_t **buf, size_t *cap, size_t need)
{
	uint8_t *nb;

	if (need <= *cap)
		return (true);
	nb = realloc(*buf, need);
	if (nb == NULL)
		return (false);
	*buf = nb;
	*cap = need;
	return (true);
}

static const char *
cmd_name(unsigned long com)
{
	switch (com) {
	case G_GATE_CMD_CREATE:		return ("CREATE");
	case G_GATE_CMD_MODIFY:		return ("MODIFY");
	case G_GATE_CMD_DESTROY:	return ("DESTROY");
	case G_GATE_CMD_CANCEL:		return ("CANCEL");
	case G_GATE_CMD_START:		return ("START");
	case G_GATE_CMD_DONE:		return ("DONE");
	default:			return ("?");
	}
}

/* -------------------------------------------------------------------- */
/* Bios. */

static struct gg_bio *
bio_alloc(int cmd, int64_t offset, int64_t length)
{
	struct gg_bio *bp;

	bp = calloc(1, sizeof(*bp));
	if (bp == NULL)
		return (NULL);
	bp->b_cmd = cmd;
	bp->b_offset = offset;
	bp->b_length = length;
	if ((cmd == BIO_READ || cmd == BIO_WRITE) && length > 0) {
		bp->b_data = calloc(1, (size_t)length);
		if (bp->b_data == NULL) {
			free(bp);
			return (NULL);
		}
	}
	return (bp);
}

static void
bio_free(struct gg_bio *bp)
{
	free(bp->b_data);
	free(bp);
}

static void load_done(struct gg_bio *bp);

/* g_io_deliver(): the bio is out of every queue and ends with `error`. */
static void
bio_deliver(struct gg_bio *bp, int error)
{
	bp->b_where = Q_NONE;
	bp->b_error = error;
	switch (bp->b_owner) {
	case OWN_CTL:
		bp->b_done = true;
		pthread_cond_broadcast(&gk_ctl_cv);
		break;
	case OWN_LOAD:
		load_done(bp);
		break;
	}
}

static void
unit_remove(struct gg_unit *u, struct gg_bio *bp)
{
	if (bp->b_where == Q_IN) {
		TAILQ_REMOVE(&u->u_inq, bp, b_queue);
		u->u_nin--;
	} else {
		TAILQ_REMOVE(&u->u_outq, bp, b_queue);
		u->u_nout--;
	}
	bp->b_where = Q_NONE;
}

static void
unit_insert_head(struct gg_unit *u, struct gg_bio *bp)
{
	TAILQ_INSERT_HEAD(&u->u_inq, bp, b_queue);
	bp->b_where = Q_IN;
	u->u_nin++;
}

/*
 * g_gate_start() and g_gate_queue_io(): queues a bio for the daemon, or
 * returns the errno it fails with at once (the caller delivers it, so
 * that a load generator can never recurse into itself).
 */
static int
unit_queue(struct gg_unit *u, struct gg_bio *bp)
{
	if (u->u_destroying)
		return (ENXIO);
	switch (bp->b_cmd) {
	case BIO_READ:
		break;
	case BIO_DELETE:
	case BIO_WRITE:
	case BIO_FLUSH:
	case BIO_SPEEDUP:
		/* "Hack to allow read-only mounts": fail, do not queue. */
		if ((u->u_flags & G_GATE_FLAG_READONLY) != 0)
			return (EPERM);
		break;
	case BIO_GETATTR:
	default:
		return (EOPNOTSUPP);
	}
	/* Note ">": a unit holds up to queue_size + 1 bios. */
	if (u->u_queue_size > 0 && u->u_queue_count > u->u_queue_size)
		return (ENOMEM);
	bp->b_seq = u->u_seq++;
	u->u_queue_count++;
	TAILQ_INSERT_TAIL(&u->u_inq, bp, b_queue);
	bp->b_where = Q_IN;
	u->u_nin++;
	pthread_cond_signal(&u->u_cv);
	return (0);
}

/* -------------------------------------------------------------------- */
/* Units. */

/* g_gate_hold(): the unit by number or provider name, referenced. */
static struct gg_unit *
unit_hold(int unit, const char *name)
{
	struct gg_unit *u = NULL;
	int i;

	if (unit >= 0 && unit < G_GATE_MAXUNITS) {
		u = gk_units[unit];
	} else if (unit == G_GATE_NAME_GIVEN && name != NULL) {
		for (i = 0; i < G_GATE_MAXUNITS; i++) {
			if (gk_units[i] != NULL &&
			    strcmp(gk_units[i]->u_name, name) == 0) {
				u = gk_units[i];
				break;
			}
		}
	}
	if (u != NULL)
		u->u_refs++;
	return (u);
}

static void
unit_release(struct gg_unit *u)
{
	if (--u->u_refs == 0 && u->u_destroying)
		pthread_cond_broadcast(&u->u_refcv);
}

/* The unit for a control request, if it exists and is not going away. */
static struct gg_unit *
unit_lookup(int unit)
{
	if (unit < 0 || unit >= G_GATE_MAXUNITS)
		return (NULL);
	if (gk_units[unit] == NULL || gk_units[unit]->u_destroying)
		return (NULL);
	return (gk_units[unit]);
}

/* g_gate_guard(): every bio older than GUARD_AGE seconds fails with EIO. */
static void
unit_guard(struct gg_unit *u, uint64_t now)
{
	struct bioq expired = TAILQ_HEAD_INITIALIZER(expired);
	struct gg_bio *bp, *next;
	struct bioq *q;
	int pass;

	for (pass = 0; pass < 2; pass++) {
		q = pass == 0 ? &u->u_inq : &u->u_outq;
		for (bp = TAILQ_FIRST(q); bp != NULL; bp = next) {
			next = TAILQ_NEXT(bp, b_queue);
			/* Whole seconds of uptime, as bintime .sec compares. */
			if (now / NSEC - bp->b_t0 / NSEC < GUARD_AGE)
				continue;
			unit_remove(u, bp);
			u->u_queue_count--;
			TAILQ_INSERT_TAIL(&expired, bp, b_queue);
		}
	}
	while ((bp = TAILQ_FIRST(&expired)) != NULL) {
		TAILQ_REMOVE(&expired, bp, b_queue);
		if (gk_verbose)
			gk_log("%s: request %" PRIuPTR " timed out",
			    u->u_name, bp->b_seq);
		bio_deliver(bp, EIO);
	}
}

static void *
guard_thread(void *arg)
{
	struct timespec tick = { .tv_sec = 0, .tv_nsec = 50000000 };
	struct gg_unit *u;
	uint64_t now;
	int i;

	(void)arg;
	for (;;) {
		nanosleep(&tick, NULL);
		pthread_mutex_lock(&gk_lock);
		now = now_ns();
		for (i = 0; i < G_GATE_MAXUNITS; i++) {
			u = gk_units[i];
			if (u == NULL || u->u_destroying ||
			    u->u_next_guard == 0 || now < u->u_next_guard)
				continue;
			unit_guard(u, now);
			/* callout_reset(timeout * hz) from the run just done. */
			u->u_next_guard = now + (uint64_t)u->u_timeout * NSEC;
		}
		pthread_mutex_unlock(&gk_lock);
	}
	return (NULL);
}

/* -------------------------------------------------------------------- */
/* The connection as the kernel sees a user process: copyin and copyout. */

/* Is the peer still there?  It sends nothing while it waits for a reply. */
static bool
conn_alive(struct conn *c)
{
	uint8_t b;
	ssize_t n;

	n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
	    errno == EINTR))
		return (true);
	return (false);		/* EOF, error, or a protocol violation */
}

/*
 * copyout(): the client writes `len` bytes at user address `uaddr`.
 * Returns 0, EFAULT, or CONN_DEAD.
 */
static int
conn_copyout(struct conn *c, uint64_t uaddr, const void *data, size_t len)
{
	struct emu_hdr h;
	uint8_t meta[8];

	emu_put64(meta, uaddr);
	if (emu_send(c->fd, EMU_OP_COPYOUT, 0, meta, 8, data, len) != 0)
		return (CONN_DEAD);
	if (emu_recv_hdr(c->fd, &h) != 0 || h.op != EMU_OP_COPYOUT_ACK ||
	    h.len != 0)
		return (CONN_DEAD);
	return (h.status == 0 ? 0 : EFAULT);
}

/* copyin(): the client sends `len` bytes from user address `uaddr`. */
static int
conn_copyin(struct conn *c, uint64_t uaddr, void *data, size_t len)
{
	struct emu_hdr h;
	uint8_t meta[16];

	emu_put64(meta, uaddr);
	emu_put64(meta + 8, len);
	if (emu_send(c->fd, EMU_OP_COPYIN, 0, meta, 16, NULL, 0) != 0)
		return (CONN_DEAD);
	if (emu_recv_hdr(c->fd, &h) != 0 || h.op != EMU_OP_COPYIN_DATA)
		return (CONN_DEAD);
	if (h.status != 0) {
		if (h.len != 0)
			return (CONN_DEAD);
		return (EFAULT);
	}
	if (h.len != len || emu_read_full(c->fd, data, len) != 0)
		return (CONN_DEAD);
	return (0);
}

/* -------------------------------------------------------------------- */
/* The ioctls: g_gate_ioctl() and the helpers it calls. */

static int
gg_create(struct g_gate_ctl_create *ggio)
{
	struct gg_unit *u;
	char name[FB_NAME_MAX + 1];
	int unit, i;

	if (ggio->gctl_mediasize <= 0)
		return (EINVAL);
	if (ggio->gctl_sectorsize == 0 || !powerof2(ggio->gctl_sectorsize))
		return (EINVAL);
	if (ggio->gctl_mediasize % ggio->gctl_sectorsize != 0)
		return (EINVAL);
	if ((ggio->gctl_flags & G_GATE_FLAG_READONLY) != 0 &&
	    (ggio->gctl_flags & G_GATE_FLAG_WRITEONLY) != 0)
		return (EINVAL);
	if (ggio->gctl_unit != G_GATE_UNIT_AUTO &&
	    ggio->gctl_unit != G_GATE_NAME_GIVEN && ggio->gctl_unit < 0)
		return (EINVAL);
	if (ggio->gctl_unit == G_GATE_NAME_GIVEN && ggio->gctl_name[0] == '\0')
		return (EINVAL);

	/* g_gate_getunit() */
	if (ggio->gctl_unit >= 0) {
		if (ggio->gctl_unit >= G_GATE_MAXUNITS)
			return (EINVAL);
		if (gk_units[ggio->gctl_unit] != NULL)
			return (EEXIST);
		unit = ggio->gctl_unit;
	} else {
		for (unit = 0; unit < G_GATE_MAXUNITS; unit++)
			if (gk_units[unit] == NULL)
				break;
		if (unit == G_GATE_MAXUNITS)
			return (ENFILE);
	}
	if (ggio->gctl_unit == G_GATE_NAME_GIVEN) {
		memset(name, 0, sizeof(name));
		memcpy(name, ggio->gctl_name, sizeof(ggio->gctl_name));
	} else {
		snprintf(name, sizeof(name), "%s%d", G_GATE_PROVIDER_NAME,
		    unit);
	}
	for (i = 0; i < G_GATE_MAXUNITS; i++)
		if (gk_units[i] != NULL && strcmp(gk_units[i]->u_name,
		    name) == 0)
			return (EEXIST);
	/* There are no other providers here to read from. */
	if (ggio->gctl_readprov[0] != '\0')
		return (EINVAL);

	u = calloc(1, sizeof(*u));
	if (u == NULL)
		return (ENOMEM);
	u->u_unit = unit;
	strcpy(u->u_name, name);
	memcpy(u->u_info, ggio->gctl_info, sizeof(u->u_info) - 1);
	u->u_mediasize = ggio->gctl_mediasize;
	u->u_sectorsize = ggio->gctl_sectorsize;
	u->u_flags = ggio->gctl_flags & G_GATE_USERFLAGS;
	u->u_queue_size = ggio->gctl_maxcount;
	if (u->u_queue_size > G_GATE_MAX_QUEUE_SIZE)
		u->u_queue_size = G_GATE_MAX_QUEUE_SIZE;
	u->u_timeout = ggio->gctl_timeout;
	if (u->u_timeout > 0)
		u->u_next_guard = now_ns() + (uint64_t)u->u_timeout * NSEC;
	u->u_seq = 1;
	TAILQ_INIT(&u->u_inq);
	TAILQ_INIT(&u->u_outq);
	cond_init(&u->u_cv);
	cond_init(&u->u_refcv);
	gk_units[unit] = u;
	ggio->gctl_unit = unit;
	if (gk_verbose)
		gk_log("%s created: %" PRId64 " bytes, sector %u, flags %#x, "
		    "queue %u, timeout %u", u->u_name, u->u_mediasize,
		    u->u_sectorsize, u->u_flags, u->u_queue_size,
		    u->u_timeout);
	return (0);
}

static int
gg_modify(struct g_gate_ctl_modify *ggio)
{
	struct gg_unit *u;
	int error = 0;

	/* g_gate_hold(unit, NULL): a name cannot be given here. */
	u = unit_hold(ggio->gctl_unit, NULL);
	if (u == NULL)
		return (ENXIO);
	if ((ggio->gctl_modify & GG_MODIFY_MEDIASIZE) != 0) {
		/* Resizing returns at once: other flags are ignored. */
		if (ggio->gctl_mediasize <= 0 ||
		    ggio->gctl_mediasize % u->u_sectorsize != 0)
			error = EINVAL;
		else if (gk_old_modify)
			error = EOPNOTSUPP;	/* "TODO" before 14 */
		else
			u->u_mediasize = ggio->gctl_mediasize;
		goto out;
	}
	if ((ggio->gctl_modify & GG_MODIFY_INFO) != 0) {
		memset(u->u_info, 0, sizeof(u->u_info));
		memcpy(u->u_info, ggio->gctl_info, sizeof(u->u_info) - 1);
	}
	/* No read provider can exist: naming one fails, clearing is fine. */
	if ((ggio->gctl_modify & GG_MODIFY_READPROV) != 0 &&
	    ggio->gctl_readprov[0] != '\0') {
		error = EINVAL;
		goto out;
	}
	if ((ggio->gctl_modify & GG_MODIFY_READOFFSET) != 0)
		error = EINVAL;		/* "No read provider." */
out:
	unit_release(u);
	return (error);
}

/* G_GATE_CMD_DESTROY and g_gate_destroy(). */
static int
gg_destroy(struct g_gate_ctl_destroy *ggio)
{
	struct bioq failed = TAILQ_HEAD_INITIALIZER(failed);
	char name[FB_NAME_MAX + 1];
	struct gg_unit *u;
	struct gg_bio *bp;

	memset(name, 0, sizeof(name));
	memcpy(name, ggio->gctl_name, sizeof(ggio->gctl_name));
	u = unit_hold(ggio->gctl_unit, name);
	if (u == NULL)
		return (ENXIO);
	if (u->u_destroying) {
		/* Someone else is at it; the unit is as good as gone. */
		unit_release(u);
		return (ENXIO);
	}
	if (!ggio->gctl_force && (u->u_acr != 0 || u->u_acw != 0 ||
	    u->u_ace != 0)) {
		unit_release(u);
		return (EBUSY);
	}
	u->u_destroying = true;
	pthread_cond_broadcast(&u->u_cv);	/* STARTs: ECANCELED */
	u->u_next_guard = 0;			/* callout_drain() */
	while ((bp = TAILQ_FIRST(&u->u_inq)) != NULL) {
		unit_remove(u, bp);
		TAILQ_INSERT_TAIL(&failed, bp, b_queue);
	}
	while ((bp = TAILQ_FIRST(&u->u_outq)) != NULL) {
		unit_remove(u, bp);
		TAILQ_INSERT_TAIL(&failed, bp, b_queue);
	}
	u->u_queue_count = 0;
	while ((bp = TAILQ_FIRST(&failed)) != NULL) {
		TAILQ_REMOVE(&failed, bp, b_queue);
		bio_deliver(bp, ENXIO);
	}
	/* One reference is ours; wait for the others (sleeping STARTs). */
	u->u_refs--;
	while (u->u_refs > 0)
		pthread_cond_wait(&u->u_refcv, &gk_lock);
	gk_units[u->u_unit] = NULL;
	if (gk_verbose)
		gk_log("%s destroyed", u->u_name);
	pthread_cond_destroy(&u->u_cv);
	pthread_cond_destroy(&u->u_refcv);
	free(u);
	return (0);
}

static int
gg_cancel(struct g_gate_ctl_cancel *ggio)
{
	char name[FB_NAME_MAX + 1];
	struct gg_unit *u;
	struct gg_bio *bp, *next, *lbp;

	memset(name, 0, sizeof(name));
	memcpy(name, ggio->gctl_name, sizeof(ggio->gctl_name));
	u = unit_hold(ggio->gctl_unit, name);
	if (u == NULL)
		return (ENXIO);
	lbp = NULL;
	for (bp = TAILQ_FIRST(&u->u_outq); bp != NULL; bp = next) {
		next = TAILQ_NEXT(bp, b_queue);
		if (ggio->gctl_seq != 0 && ggio->gctl_seq != bp->b_seq)
			continue;
		unit_remove(u, bp);
		/* Back onto the incoming queue, in the order they were taken. */
		if (lbp == NULL) {
			unit_insert_head(u, bp);
		} else {
			TAILQ_INSERT_AFTER(&u->u_inq, lbp, bp, b_queue);
			bp->b_where = Q_IN;
			u->u_nin++;
		}
		lbp = bp;
		if (ggio->gctl_seq != 0)
			break;
	}
	if (ggio->gctl_unit == G_GATE_NAME_GIVEN)
		ggio->gctl_unit = u->u_unit;
	/*
	 * Like g_gate.c, no wakeup(sc) here: a START already asleep does not
	 * see the requeued bios until something else wakes it.
	 */
	unit_release(u);
	return (0);
}

/* G_GATE_CMD_START; called and returning with gk_lock held. */
static int
gg_start(struct conn *c, struct g_gate_ctl_io *ggio)
{
	struct gg_unit *u;
	struct gg_bio *bp;
	uintptr_t seq;
	size_t len;
	int error = 0;

	u = unit_hold(ggio->gctl_unit, NULL);
	if (u == NULL)
		return (ENXIO);
	for (;;) {
		bp = TAILQ_FIRST(&u->u_inq);
		if (bp != NULL) {
			/*
			 * A dead daemon must not take a bio it cannot serve:
			 * pass the wakeup on and go away.  (In FreeBSD its
			 * sleep would have been interrupted at exit.)
			 */
			if (!conn_alive(c)) {
				pthread_cond_signal(&u->u_cv);
				error = CONN_DEAD;
				goto out;
			}
			break;
		}
		if (u->u_destroying) {
			ggio->gctl_error = ECANCELED;
			goto out;
		}
		/* Sleep; look at the peer now and then, in case it died. */
		if (cond_wait_until(&u->u_cv, now_ns() + NSEC) == ETIMEDOUT &&
		    !conn_alive(c)) {
			error = CONN_DEAD;
			goto out;
		}
	}
	ggio->gctl_cmd = (fb_u_int)bp->b_cmd;
	if (bp->b_cmd == BIO_WRITE && bp->b_length > ggio->gctl_length) {
		/* Too small a buffer: say how long, leave the bio queued. */
		ggio->gctl_length = bp->b_length;
		ggio->gctl_error = ENOMEM;
		/*
		 * wakeup(sc) woke every sleeper, and one of them may have a
		 * buffer large enough: pass on our (single) wakeup.
		 */
		pthread_cond_signal(&u->u_cv);
		goto out;
	}
	unit_remove(u, bp);
	TAILQ_INSERT_TAIL(&u->u_outq, bp, b_queue);
	bp->b_where = Q_OUT;
	u->u_nout++;
	ggio->gctl_seq = bp->b_seq;
	ggio->gctl_offset = bp->b_offset;
	ggio->gctl_length = bp->b_length;
	if (bp->b_cmd != BIO_WRITE || bp->b_length == 0)
		goto out;

	/*
	 * copyout() of the payload, without the lock: stage it first, for
	 * the bio may be cancelled, timed out or destroyed meanwhile.
	 */
	len = (size_t)bp->b_length;
	seq = bp->b_seq;
	if (!grow(&c->out, &c->outcap, len)) {
		error = ENOMEM;
		goto requeue;
	}
	memcpy(c->out, bp->b_data, len);
	pthread_mutex_unlock(&gk_lock);
	error = conn_copyout(c, ggio->gctl_data, c->out, len);
	pthread_mutex_lock(&gk_lock);
	if (error == 0)
		goto out;
requeue:
	/* The copyout failed: back to the head of the queue, if still out. */
	TAILQ_FOREACH(bp, &u->u_outq, b_queue) {
		if (bp->b_seq == seq) {
			unit_remove(u, bp);
			unit_insert_head(u, bp);
			pthread_cond_signal(&u->u_cv);
			break;
		}
	}
out:
	unit_release(u);
	return (error);
}

/*
 * G_GATE_CMD_DONE; called and returning with gk_lock held.  `eager` is
 * what the library sent along unasked: gctl_length bytes from gctl_data.
 */
static int
gg_done(struct conn *c, struct g_gate_ctl_io *ggio, const uint8_t *eager,
    size_t eagerlen)
{
	struct gg_unit *u;
	struct gg_bio *bp;
	int error = 0, bio_error;

	u = unit_hold(ggio->gctl_unit, NULL);
	if (u == NULL)
		return (ENOENT);
	TAILQ_FOREACH(bp, &u->u_outq, b_queue)
		if (bp->b_seq == ggio->gctl_seq)
			break;
	if (bp == NULL)
		goto out;		/* "Request was probably canceled." */
	unit_remove(u, bp);
	u->u_queue_count--;
	if (ggio->gctl_error == EAGAIN) {
		/* Desisted: back at the head, for another worker. */
		u->u_queue_count++;
		unit_insert_head(u, bp);
		pthread_cond_signal(&u->u_cv);
		goto out;
	}
	bio_error = ggio->gctl_error;
	if (bio_error == 0 && bp->b_cmd == BIO_READ && bp->b_length > 0 &&
	    eagerlen >= (size_t)bp->b_length) {
		/* The same bytes a copyin() would fetch: the first bio_length. */
		memcpy(bp->b_data, eager, (size_t)bp->b_length);
	} else if (bio_error == 0 && bp->b_cmd == BIO_READ &&
	    bp->b_length > 0) {
		/*
		 * copyin() of bio_length bytes (not gctl_length: the kernel
		 * trusts its own bio).  The bio is in no queue now, so
		 * nothing else touches it while the lock is dropped.
		 */
		pthread_mutex_unlock(&gk_lock);
		error = conn_copyin(c, ggio->gctl_data, bp->b_data,
		    (size_t)bp->b_length);
		pthread_mutex_lock(&gk_lock);
		if (error != 0)
			bio_error = EFAULT;
	}
	bio_deliver(bp, bio_error);
out:
	unit_release(u);
	return (error);
}

/*
 * One G_GATE ioctl: in c->in, the request number, IOCPARM_LEN bytes of
 * struct, and maybe the eager data of a DONE.  Replies and returns 0, or
 * returns CONN_DEAD.
 */
static int
handle_ioctl(struct conn *c, size_t len)
{
	union {
		struct g_gate_ctl_create	create;
		struct g_gate_ctl_modify	modify;
		struct g_gate_ctl_destroy	destroy;
		struct g_gate_ctl_cancel	cancel;
		struct g_gate_ctl_io		io;
		uint8_t				bytes[FB_IOCPARM_MAX];
	} s;
	uint64_t req;
	uint32_t com;
	size_t size, extra;
	int error;

	if (len < 8)
		return (CONN_DEAD);
	req = emu_get64(c->in);
	com = (uint32_t)req;
	/* The library sizes the struct as kern_ioctl does; so do we. */
	size = 0;
	if ((com & FB_IOC_VOID) == 0 && (com & FB_IOC_INOUT) != 0)
		size = FB_IOCPARM_LEN(com);
	if (len - 8 < size)
		return (CONN_DEAD);
	extra = len - 8 - size;
	memset(&s, 0, sizeof(s));
	memcpy(&s, c->in + 8, size);

	pthread_mutex_lock(&gk_lock);
	if (req > 0xffffffffull) {
		/* sys_ioctl() keeps the low 32 bits (and warns, INVARIANTS). */
		gk_sign_warnings++;
		gk_log("WARNING: ioctl sign-extension ioctl %" PRIx64, req);
	}
	if (size != FB_IOCPARM_LEN(com)) {
		error = ENOTTY;
		goto reply;
	}
	/* Every struct starts with gctl_version: G_GATE_CHECK_VERSION. */
	switch (com) {
	case G_GATE_CMD_CREATE:
	case G_GATE_CMD_MODIFY:
	case G_GATE_CMD_DESTROY:
	case G_GATE_CMD_CANCEL:
	case G_GATE_CMD_START:
	case G_GATE_CMD_DONE:
		if (s.io.gctl_version != G_GATE_VERSION) {
			gk_log("Version mismatch %u != %d.",
			    s.io.gctl_version, G_GATE_VERSION);
			error = EINVAL;
			goto reply;
		}
		break;
	}
	switch (com) {
	case G_GATE_CMD_CREATE:
		error = gg_create(&s.create);
		break;
	case G_GATE_CMD_MODIFY:
		error = gg_modify(&s.modify);
		break;
	case G_GATE_CMD_DESTROY:
		error = gg_destroy(&s.destroy);
		break;
	case G_GATE_CMD_CANCEL:
		error = gg_cancel(&s.cancel);
		break;
	case G_GATE_CMD_START:
		error = gg_start(c, &s.io);
		break;
	case G_GATE_CMD_DONE:
		error = gg_done(c, &s.io, c->in + 8 + size, extra);
		break;
	default:
		error = ENOTTY;		/* ENOIOCTL, as userland sees it */
		break;
	}
reply:
	pthread_mutex_unlock(&gk_lock);
	if (error == CONN_DEAD)
		return (CONN_DEAD);
	if (gk_verbose)
		gk_log("ioctl %s (%#" PRIx32 ") unit %d -> %d (%s)",
		    cmd_name(com), com, com == G_GATE_CMD_CREATE ?
		    s.create.gctl_unit : s.io.gctl_unit, error,
		    error ? strerror(error) : "ok");
	if (emu_send(c->fd, EMU_OP_IOCTL_REPLY, error, &s,
	    error == 0 ? size : 0, NULL, 0) != 0)
		return (CONN_DEAD);
	return (0);
}

/* -------------------------------------------------------------------- */
/* The load generator: GEOM consumers that never tire. */

static uint64_t
load_rand(struct gg_load *l)
{
	/* xorshift64*: plenty for spreading offsets. */
	l->l_rng ^= l->l_rng >> 12;
	l->l_rng ^= l->l_rng << 25;
	l->l_rng ^= l->l_rng >> 27;
	return (l->l_rng * 0x2545F4914F6CDD1Dull);
}

/* Sends a load bio (again); a bio that cannot be queued gets parked. */
static void
load_issue(struct gg_load *l, struct gg_bio *bp)
{
	struct gg_unit *u;
	int64_t blocks;
	int error;

	if (l->l_cmd == BIO_FLUSH) {
		/* As g_io_flush() sends it. */
		bp->b_offset = 0;
		bp->b_length = 0;
		if ((u = gk_units[l->l_unit]) != NULL)
			bp->b_offset = u->u_mediasize;
	} else if ((u = gk_units[l->l_unit]) != NULL) {
		blocks = u->u_mediasize / l->l_length;
		if (blocks == 0) {
			bp->b_offset = 0;	/* shrunk under us: let it fail */
		} else if (l->l_random) {
			bp->b_offset = (int64_t)(load_rand(l) %
			    (uint64_t)blocks) * l->l_length;
		} else {
			if (l->l_next + l->l_length > u->u_mediasize)
				l->l_next = 0;
			bp->b_offset = l->l_next;
			l->l_next += l->l_length;
		}
	}
	bp->b_t0 = now_ns();
	bp->b_error = 0;
	u = gk_units[l->l_unit];
	error = u != NULL ? unit_queue(u, bp) : ENXIO;
	if (error != 0) {
		l->l_errors++;
		TAILQ_INSERT_TAIL(&l->l_parked, bp, b_queue);
		pthread_cond_signal(&l->l_cv);
	}
}

/* A load bio came back (bio_deliver). */
static void
load_done(struct gg_bio *bp)
{
	struct gg_load *l = bp->b_load;
	uint64_t now = now_ns(), *nl;
	size_t ncap;

	if (l->l_abandoned) {
		/* Its run is over and reported; the last bio frees it. */
		bio_free(bp);
		if (--l->l_outstanding == 0) {
			pthread_cond_destroy(&l->l_cv);
			free(l);
		}
		return;
	}
	if (bp->b_error == 0) {
		l->l_completed++;
		l->l_bytes += (uint64_t)bp->b_length;
		if (l->l_nlat == l->l_caplat) {
			ncap = l->l_caplat == 0 ? 4096 : l->l_caplat * 2;
			nl = realloc(l->l_lat, ncap * sizeof(*nl));
			if (nl != NULL) {
				l->l_lat = nl;
				l->l_caplat = ncap;
			}
		}
		if (l->l_nlat < l->l_caplat)
			l->l_lat[l->l_nlat++] = now - bp->b_t0;
	} else {
		l->l_errors++;
	}
	l->l_last_done = now;
	if (l->l_running) {
		load_issue(l, bp);
		return;
	}
	bio_free(bp);
	if (--l->l_outstanding == 0)
		pthread_cond_signal(&l->l_cv);
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x < y ? -1 : x > y);
}

/* -------------------------------------------------------------------- */
/* Test control. */

static int
reply(struct conn *c, uint32_t op, int status, const void *body, size_t len)
{
	return (emu_send(c->fd, op, status, body, len, NULL, 0) == 0 ? 0 :
	    CONN_DEAD);
}

static int
ctl_hello(struct conn *c)
{
	uint8_t b[8];

	emu_put32(b, EMU_PROTO_VERSION);
	emu_put32(b + 4, (uint32_t)getpid());
	return (reply(c, EMU_OP_HELLO, 0, b, sizeof(b)));
}

/*
 * Queue a bio as a GEOM consumer would (g_io_request): body is
 * i32 unit, u32 cmd, i64 offset, i64 length, then the data of a WRITE.
 */
static int
ctl_queue_bio(struct conn *c, size_t len)
{
	struct gg_unit *u;
	struct gg_bio *bp;
	int64_t offset, length;
	uint8_t out[8];
	int unit, cmd, error;
	uint64_t id;

	if (len < 24)
		return (reply(c, EMU_OP_QUEUE_BIO, EINVAL, NULL, 0));
	unit = (int32_t)emu_get32(c->in);
	cmd = (int)emu_get32(c->in + 4);
	offset = (int64_t)emu_get64(c->in + 8);
	length = (int64_t)emu_get64(c->in + 16);
	/* Only a bio with data is bounded by a frame: a BIO_DELETE may span terabytes. */
	if (length < 0 ||
	    ((cmd == BIO_READ || cmd == BIO_WRITE) && length > (int64_t)EMU_MAX_BODY) ||
	    (cmd == BIO_WRITE && len != 24 + (size_t)length) ||
	    (cmd != BIO_WRITE && len != 24))
		return (reply(c, EMU_OP_QUEUE_BIO, EINVAL, NULL, 0));

	pthread_mutex_lock(&gk_lock);
	u = unit_lookup(unit);
	if (u == NULL) {
		pthread_mutex_unlock(&gk_lock);
		return (reply(c, EMU_OP_QUEUE_BIO, ENXIO, NULL, 0));
	}
	bp = bio_alloc(cmd, offset, length);
	if (bp == NULL) {
		pthread_mutex_unlock(&gk_lock);
		return (reply(c, EMU_OP_QUEUE_BIO, ENOMEM, NULL, 0));
	}
	if (cmd == BIO_WRITE && length > 0)
		memcpy(bp->b_data, c->in + 24, (size_t)length);
	bp->b_owner = OWN_CTL;
	bp->b_id = id = gk_next_id++;
	bp->b_t0 = now_ns();
	TAILQ_INSERT_TAIL(&gk_ctl_bios, bp, b_ctl);

	/* g_io_check(): what GEOM refuses before the provider sees it. */
	error = 0;
	if (cmd == BIO_READ || cmd == BIO_WRITE || cmd == BIO_DELETE) {
		if (offset < 0 || offset % u->u_sectorsize != 0 ||
		    length % u->u_sectorsize != 0)
			error = EINVAL;
		else if (offset > u->u_mediasize)
			error = EIO;
		else if (offset + length > u->u_mediasize)
			bp->b_length = u->u_mediasize - offset;	/* trimmed */
	}
	if (error == 0)
		error = unit_queue(u, bp);
	if (error != 0)
		bio_deliver(bp, error);
	pthread_mutex_unlock(&gk_lock);
	emu_put64(out, id);
	return (reply(c, EMU_OP_QUEUE_BIO, 0, out, sizeof(out)));
}

/*
 * Wait for a control bio: body is u64 id, i64 timeout in ms (< 0: forever),
 * u32 flags, u32 0.  Flag bit 0, "peek": look without waiting and without
 * consuming a completed bio (its timeout is ignored).
 */
static int
ctl_await_bio(struct conn *c, size_t len)
{
	struct gg_bio *bp;
	uint64_t id, deadline;
	int64_t timeout_ms;
	uint8_t head[16];
	bool keep;
	int rc;

	if (len != 24)
		return (reply(c, EMU_OP_AWAIT_BIO, EINVAL, NULL, 0));
	id = emu_get64(c->in);
	timeout_ms = (int64_t)emu_get64(c->in + 8);
	keep = (emu_get32(c->in + 16) & 1) != 0;
	/* Negative, or beyond a day: no deadline.  A peek never waits. */
	if (keep)
		deadline = 0;
	else if (timeout_ms < 0 || timeout_ms > 86400000)
		deadline = UINT64_MAX;
	else
		deadline = now_ns() + (uint64_t)timeout_ms * 1000000ull;

	pthread_mutex_lock(&gk_lock);
	TAILQ_FOREACH(bp, &gk_ctl_bios, b_ctl)
		if (bp->b_id == id)
			break;
	if (bp == NULL || (!keep && bp->b_awaited)) {
		pthread_mutex_unlock(&gk_lock);
		return (reply(c, EMU_OP_AWAIT_BIO, bp == NULL ? ENOENT : EBUSY,
		    NULL, 0));
	}
	if (!keep) {
		/* One consuming waiter at a time: it frees the bio. */
		bp->b_awaited = true;
		while (!bp->b_done && now_ns() < deadline) {
			if (deadline == UINT64_MAX)
				pthread_cond_wait(&gk_ctl_cv, &gk_lock);
			else
				cond_wait_until(&gk_ctl_cv, deadline);
		}
		bp->b_awaited = false;
	}
	if (!bp->b_done) {
		pthread_mutex_unlock(&gk_lock);
		return (reply(c, EMU_OP_AWAIT_BIO, ETIMEDOUT, NULL, 0));
	}
	emu_put32(head, (uint32_t)bp->b_error);
	emu_put32(head + 4, (uint32_t)bp->b_cmd);
	len = bp->b_cmd == BIO_READ && bp->b_error == 0 ?
	    (size_t)bp->b_length : 0;
	emu_put64(head + 8, len);
	if (keep) {
		/* The bio stays listed: send a copy, made under the lock. */
		if (!grow(&c->out, &c->outcap, len)) {
			pthread_mutex_unlock(&gk_lock);
			return (reply(c, EMU_OP_AWAIT_BIO, ENOMEM, NULL, 0));
		}
		if (len > 0)
			memcpy(c->out, bp->b_data, len);
		pthread_mutex_unlock(&gk_lock);
		return (emu_send(c->fd, EMU_OP_AWAIT_BIO, 0, head, sizeof(head),
		    c->out, len) == 0 ? 0 : CONN_DEAD);
	}
	TAILQ_REMOVE(&gk_ctl_bios, bp, b_ctl);
	pthread_mutex_unlock(&gk_lock);
	rc = emu_send(c->fd, EMU_OP_AWAIT_BIO, 0, head, sizeof(head),
	    bp->b_data, len) == 0 ? 0 : CONN_DEAD;
	bio_free(bp);
	return (rc);
}

/* Every unit, in the record format README.md gives. */
static int
ctl_list_units(struct conn *c)
{
	struct gg_unit *u;
	uint8_t *p;
	size_t need, nlen, ilen;
	uint32_t count = 0;
	int i;

	pthread_mutex_lock(&gk_lock);
	need = 8;
	for (i = 0; i < G_GATE_MAXUNITS; i++)
		if (gk_units[i] != NULL)
			need += 72 + strlen(gk_units[i]->u_name) +
			    strlen(gk_units[i]->u_info);
	if (!grow(&c->out, &c->outcap, need)) {
		pthread_mutex_unlock(&gk_lock);
		return (reply(c, EMU_OP_LIST_UNITS, ENOMEM, NULL, 0));
	}
	p = c->out + 8;
	for (i = 0; i < G_GATE_MAXUNITS; i++) {
		if ((u = gk_units[i]) == NULL)
			continue;
		count++;
		nlen = strlen(u->u_name);
		ilen = strlen(u->u_info);
		emu_put32(p + 0, (uint32_t)u->u_unit);
		emu_put32(p + 4, u->u_flags |
		    (u->u_destroying ? G_GATE_FLAG_DESTROY : 0));
		emu_put64(p + 8, (uint64_t)u->u_mediasize);
		emu_put32(p + 16, u->u_sectorsize);
		emu_put32(p + 20, u->u_timeout);
		emu_put32(p + 24, u->u_queue_size);
		emu_put32(p + 28, u->u_queue_count);
		emu_put32(p + 32, u->u_nin);
		emu_put32(p + 36, u->u_nout);
		emu_put64(p + 40, u->u_seq);
		emu_put32(p + 48, (uint32_t)u->u_acr);
		emu_put32(p + 52, (uint32_t)u->u_acw);
		emu_put32(p + 56, (uint32_t)u->u_ace);
		emu_put32(p + 60, (uint32_t)u->u_refs);
		emu_put32(p + 64, (uint32_t)nlen);
		emu_put32(p + 68, (uint32_t)ilen);
		memcpy(p + 72, u->u_name, nlen);
		memcpy(p + 72 + nlen, u->u_info, ilen);
		p += 72 + nlen + ilen;
	}
	emu_put32(c->out, count);
	emu_put32(c->out + 4, (uint32_t)gk_sign_warnings);
	pthread_mutex_unlock(&gk_lock);
	/* c->out is this connection's own: send it without the lock. */
	return (reply(c, EMU_OP_LIST_UNITS, 0, c->out, (size_t)(p - c->out)));
}

/* Open or close the provider: body is i32 unit, i32 acr, acw, ace. */
static int
ctl_set_access(struct conn *c, size_t len)
{
	struct gg_unit *u;
	int acr, acw, ace, error = 0;

	if (len != 16)
		return (reply(c, EMU_OP_SET_ACCESS, EINVAL, NULL, 0));
	acr = (int32_t)emu_get32(c->in + 4);
	acw = (int32_t)emu_get32(c->in + 8);
	ace = (int32_t)emu_get32(c->in + 12);
	pthread_mutex_lock(&gk_lock);
	u = unit_lookup((int32_t)emu_get32(c->in));
	if (u == NULL)
		error = ENXIO;			/* g_gate_access() */
	else if (acr < 0 || acw < 0 || ace < 0)
		error = EINVAL;
	else if ((u->u_flags & G_GATE_FLAG_WRITEONLY) != 0 && acr > u->u_acr)
		error = EPERM;
	else {
		u->u_acr = acr;
		u->u_acw = acw;
		u->u_ace = ace;
	}
	pthread_mutex_unlock(&gk_lock);
	return (reply(c, EMU_OP_SET_ACCESS, error, NULL, 0));
}

/*
 * Run a load: body is i32 unit, u32 cmd, u32 depth, u32 flags (bit 0:
 * random offsets), i64 bio length, i64 duration in ms, u64 seed, i64
 * grace in ms (how long to wait, after the run, for bios still out).
 */
static int
ctl_run_load(struct conn *c, size_t len)
{
	struct bioq retry = TAILQ_HEAD_INITIALIZER(retry);
	struct gg_load *l;
	struct gg_unit *u;
	struct gg_bio *bp;
	uint64_t start, deadline, grace, now, seed, dur_ms, grace_ms;
	uint64_t p50 = 0, p99 = 0, max = 0, *lat;
	size_t nlat;
	uint32_t depth, flags, i;
	uint8_t out[64];
	int64_t length;
	int unit, cmd, error = 0;

	if (len != 48)
		return (reply(c, EMU_OP_RUN_LOAD, EINVAL, NULL, 0));
	unit = (int32_t)emu_get32(c->in);
	cmd = (int)emu_get32(c->in + 4);
	depth = emu_get32(c->in + 8);
	flags = emu_get32(c->in + 12);
	length = (int64_t)emu_get64(c->in + 16);
	dur_ms = emu_get64(c->in + 24);
	seed = emu_get64(c->in + 32);
	grace_ms = emu_get64(c->in + 40);

	l = calloc(1, sizeof(*l));
	if (l == NULL)
		return (reply(c, EMU_OP_RUN_LOAD, ENOMEM, NULL, 0));
	pthread_mutex_lock(&gk_lock);
	u = unit_lookup(unit);
	if (u == NULL)
		error = ENXIO;
	else if (depth == 0 || depth > LOAD_MAX_DEPTH || dur_ms == 0 ||
	    dur_ms > 3600 * 1000 || grace_ms > 3600 * 1000)
		error = EINVAL;
	else if (cmd != BIO_READ && cmd != BIO_WRITE && cmd != BIO_DELETE &&
	    cmd != BIO_FLUSH)
		error = EINVAL;
	else if (cmd != BIO_FLUSH && (length <= 0 ||
	    length % u->u_sectorsize != 0 || length > u->u_mediasize ||
	    length > (int64_t)EMU_MAX_BODY))
		error = EINVAL;
	if (error != 0) {
		pthread_mutex_unlock(&gk_lock);
		free(l);
		return (reply(c, EMU_OP_RUN_LOAD, error, NULL, 0));
	}
	l->l_unit = unit;
	l->l_cmd = cmd;
	l->l_length = cmd == BIO_FLUSH ? 0 : length;
	l->l_random = (flags & 1) != 0;
	l->l_rng = seed != 0 ? seed : now_ns() | 1;
	l->l_running = true;
	TAILQ_INIT(&l->l_parked);
	cond_init(&l->l_cv);

	for (i = 0; i < depth; i++) {
		bp = bio_alloc(cmd, 0, l->l_length);
		if (bp == NULL)
			break;
		if (cmd == BIO_WRITE)
			memset(bp->b_data, 0xa5, (size_t)l->l_length);
		bp->b_owner = OWN_LOAD;
		bp->b_load = l;
		l->l_outstanding++;
		load_issue(l, bp);
	}
	start = now_ns();
	deadline = start + dur_ms * 1000000ull;
	while ((now = now_ns()) < deadline) {
		if (TAILQ_EMPTY(&l->l_parked)) {
			cond_wait_until(&l->l_cv, deadline);
			continue;
		}
		/* Bios the unit refused: try again, but not in a busy loop. */
		cond_wait_until(&l->l_cv, now + 10000000ull);
		TAILQ_CONCAT(&retry, &l->l_parked, b_queue);
		while ((bp = TAILQ_FIRST(&retry)) != NULL) {
			TAILQ_REMOVE(&retry, bp, b_queue);
			load_issue(l, bp);
		}
	}
	l->l_running = false;
	while ((bp = TAILQ_FIRST(&l->l_parked)) != NULL) {
		TAILQ_REMOVE(&l->l_parked, bp, b_queue);
		bio_free(bp);
		l->l_outstanding--;
	}
	/* Let the daemon finish what it has, for a while. */
	grace = now_ns() + grace_ms * 1000000ull;
	while (l->l_outstanding > 0 && now_ns() < grace)
		cond_wait_until(&l->l_cv, grace);

	/* The results are ours from here on. */
	lat = l->l_lat;
	nlat = l->l_nlat;
	l->l_lat = NULL;
	l->l_nlat = l->l_caplat = 0;
	emu_put64(out + 0, l->l_completed);
	emu_put64(out + 8, l->l_errors);
	emu_put64(out + 16, l->l_bytes);
	emu_put64(out + 24, (l->l_last_done > deadline ? l->l_last_done :
	    deadline) - start);
	emu_put64(out + 56, l->l_outstanding);
	if (l->l_outstanding > 0) {
		/* Bios left in the queues free the load when they come back. */
		l->l_abandoned = true;
		l = NULL;
	}
	pthread_mutex_unlock(&gk_lock);

	if (nlat > 0) {
		qsort(lat, nlat, sizeof(lat[0]), cmp_u64);
		p50 = lat[(nlat - 1) * 50 / 100];
		p99 = lat[(nlat - 1) * 99 / 100];
		max = lat[nlat - 1];
	}
	free(lat);
	emu_put64(out + 32, p50);
	emu_put64(out + 40, p99);
	emu_put64(out + 48, max);
	if (l != NULL) {
		pthread_cond_destroy(&l->l_cv);
		free(l);
	}
	return (reply(c, EMU_OP_RUN_LOAD, 0, out, sizeof(out)));
}

/* -------------------------------------------------------------------- */
/* Connections and the main loop. */

static void *
conn_thread(void *arg)
{
	struct conn *c = arg;
	struct emu_hdr h;
	int rc;

	for (;;) {
		if (emu_recv_hdr(c->fd, &h) != 0)
			break;
		if (!grow(&c->in, &c->incap, h.len) ||
		    emu_read_full(c->fd, c->in, h.len) != 0)
			break;
		switch (h.op) {
		case EMU_OP_IOCTL:
			rc = handle_ioctl(c, h.len);
			break;
		case EMU_OP_HELLO:
			rc = ctl_hello(c);
			break;
		case EMU_OP_QUEUE_BIO:
			rc = ctl_queue_bio(c, h.len);
			break;
		case EMU_OP_AWAIT_BIO:
			rc = ctl_await_bio(c, h.len);
			break;
		case EMU_OP_LIST_UNITS:
			rc = ctl_list_units(c);
			break;
		case EMU_OP_SET_ACCESS:
			rc = ctl_set_access(c, h.len);
			break;
		case EMU_OP_RUN_LOAD:
			rc = ctl_run_load(c, h.len);
			break;
		default:
			rc = reply(c, h.op, ENOSYS, NULL, 0);
			break;
		}
		if (rc == CONN_DEAD)
			break;
	}
	/*
	 * Nothing to undo: bios a dead daemon took stay in the out queue,
	 * for CANCEL to hand to the next one (the unit outlives its daemon).
	 */
	shutdown(c->fd, SHUT_RDWR);
	close(c->fd);
	free(c->in);
	free(c->out);
	free(c);
	return (NULL);
}

static void *
accept_thread(void *arg)
{
	pthread_attr_t attr;
	pthread_t td;
	struct conn *c;
	int ls = *(int *)arg, s;

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	for (;;) {
		s = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
		if (s < 0) {
			if (errno == EINTR || errno == ECONNABORTED ||
			    errno == EMFILE || errno == ENFILE) {
				if (errno == EMFILE || errno == ENFILE)
					usleep(10000);
				continue;
			}
			gk_log("accept: %s", strerror(errno));
			break;
		}
		c = calloc(1, sizeof(*c));
		if (c == NULL) {
			close(s);
			continue;
		}
		c->fd = s;
		if (pthread_create(&td, &attr, conn_thread, c) != 0) {
			gk_log("pthread_create: %s", strerror(errno));
			close(s);
			free(c);
		}
	}
	return (NULL);
}

/* EOF on stdin: the parent is gone, so are we. */
static void *
stdin_thread(void *arg)
{
	char buf[256];
	ssize_t n;

	(void)arg;
	do {
		n = read(STDIN_FILENO, buf, sizeof(buf));
	} while (n > 0 || (n < 0 && errno == EINTR));
	kill(getpid(), SIGTERM);
	return (NULL);
}

static void
usage(void)
{
	fprintf(stderr, "usage: ggate-kernel [-v] [-i] [-o] socket-path\n");
	exit(2);
}

int
main(int argc, char *argv[])
{
	struct sockaddr_un sun;
	pthread_attr_t attr;
	struct stat sb;
	sigset_t sigs;
	pthread_t td;
	bool watch_stdin = true;
	int ch, ls, sig;

	while ((ch = getopt(argc, argv, "vio")) != -1) {
		switch (ch) {
		case 'v':
			gk_verbose = true;
			break;
		case 'i':
			watch_stdin = false;
			break;
		case 'o':
			gk_old_modify = true;
			break;
		default:
			usage();
		}
	}
	if (optind != argc - 1)
		usage();
	gk_socket_path = argv[optind];

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(gk_socket_path) >= sizeof(sun.sun_path)) {
		gk_log("%s: socket path too long", gk_socket_path);
		return (1);
	}
	strcpy(sun.sun_path, gk_socket_path);

	/* Signals are taken by sigwait() below, in this thread only. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	cond_init(&gk_ctl_cv);

	/* A stale socket from a crashed run is in the way; nothing else is. */
	if (lstat(gk_socket_path, &sb) == 0 && S_ISSOCK(sb.st_mode))
		unlink(gk_socket_path);
	ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (ls < 0 || bind(ls, (struct sockaddr *)&sun, sizeof(sun)) != 0 ||
	    listen(ls, 128) != 0) {
		gk_log("%s: %s", gk_socket_path, strerror(errno));
		return (1);
	}
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&td, &attr, accept_thread, &ls) != 0 ||
	    pthread_create(&td, &attr, guard_thread, NULL) != 0 ||
	    (watch_stdin &&
	    pthread_create(&td, &attr, stdin_thread, NULL) != 0)) {
		gk_log("pthread_create failed");
		unlink(gk_socket_path);
		return (1);
	}
	printf("ready %s\n", gk_socket_path);
	fflush(stdout);

	sigwait(&sigs, &sig);
	unlink(gk_socket_path);
	if (gk_verbose)
		gk_log("signal %d: exiting", sig);
	_exit(0);
}
