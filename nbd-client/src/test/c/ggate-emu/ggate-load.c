/*
 * ggate-load: drive the ggate-kernel emulator's in-kernel load generator
 * (RUN_LOAD) from the command line, and print the result as one line of
 * JSON.  bench/ggate-compare.sh builds it on its own:
 *
 *	gcc -O2 -o ggate-load ggate-load.c emu_wire.c
 *
 * Two modes:
 *
 *   ggate-load [-r RAMP] [-g GRACE] [-S SEED] SOCKET UNIT CMD DEPTH BIO_BYTES
 *       SECONDS random|seq
 *	Keeps DEPTH bios of BIO_BYTES (4096, 4k, 1M, ...) outstanding on
 *	ggateUNIT for SECONDS (decimals allowed), as GEOM consumers inside
 *	the kernel would, and prints
 *	  {"completed":N, "errors":N, "bytes":N, "elapsed_s":S, "iops":X,
 *	   "bytes_per_second":X, "p50_us":X, "p99_us":X, "max_us":X,
 *	   "abandoned":N}
 *	CMD is read, write, delete or flush.  -r runs the same load for RAMP
 *	seconds first and throws that result away; -g is how long to wait
 *	after the run for bios still out (default 30 s); -S seeds the random
 *	offsets (default: from the clock).  Exit status 1 when a bio failed
 *	or was left behind, 2 for a bad command line, 3 when the kernel
 *	could not be asked.
 *
 *   ggate-load serve [-w WORKERS] [-s SECTOR] [-q QUEUE] LIB SOCKET UNIT
 *       MEDIASIZE
 *	A "null daemon": creates ggateUNIT through LIB (libggate-emu.so,
 *	dlopen()ed, its open/ioctl/close called as the Java daemon calls
 *	them) and serves it with WORKERS threads (default 32) that loop
 *	START, answer, DONE, exactly like the daemon's workers but without
 *	any NBD behind them: a READ is a memcpy from a buffer of random
 *	bytes, a WRITE, DELETE or FLUSH succeeds at once.  What the emulator
 *	and the library cost on their own, per bio.  Prints "ggateUNIT" once
 *	serving; SIGTERM or SIGINT destroys the unit (forced) and exits.
 */
#ifndef _GNU_SOURCE
#define	_GNU_SOURCE
#endif

#include <sys/socket.h>
#include <sys/un.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
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

#define	PROG	"ggate-load"

static void
usage(void)
{
	fprintf(stderr,
	    "usage: " PROG " [-r RAMP] [-g GRACE] [-S SEED] SOCKET UNIT "
	    "read|write|delete|flush DEPTH BIO_BYTES SECONDS random|seq\n"
	    "       " PROG " serve [-w WORKERS] [-s SECTOR] [-q QUEUE] "
	    "LIB SOCKET UNIT MEDIASIZE\n");
	exit(2);
}

static void
die(int status, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROG ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(status);
}

/* 4096, 4k, 4K, 1m, 1M, 1g, 1G (binary units); -1 when it does not parse. */
static int64_t
parse_size(const char *s)
{
	char *end;
	unsigned long long v;
	int shift = 0;

	if (s[0] < '0' || s[0] > '9')
		return (-1);
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return (-1);
	switch (*end) {
	case '\0':
		break;
	case 'k': case 'K':
		shift = 10;
		break;
	case 'm': case 'M':
		shift = 20;
		break;
	case 'g': case 'G':
		shift = 30;
		break;
	default:
		return (-1);
	}
	if (*end != '\0' && end[1] != '\0' && strcmp(end + 1, "iB") != 0 &&
	    strcmp(end + 1, "B") != 0)
		return (-1);
	if (v > (unsigned long long)INT64_MAX >> shift)
		return (-1);
	return ((int64_t)(v << shift));
}

/* Seconds (decimals allowed) to whole milliseconds; -1 when bad. */
static int64_t
parse_ms(const char *s)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !(v >= 0) ||
	    v > 3600.0)
		return (-1);
	return ((int64_t)(v * 1000.0 + 0.5));
}

static long
parse_long(const char *s, long min, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return (LONG_MIN);
	return (v);
}

/* -------------------------------------------------------------------- */
/* RUN_LOAD */

struct load_result {
	uint64_t	completed, errors, bytes, elapsed_ns;
	uint64_t	p50_ns, p99_ns, max_ns, abandoned;
};

static int
kernel_connect(const char *path)
{
	struct sockaddr_un sun;
	int s;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path))
		die(3, "%s: socket path too long", path);
	strcpy(sun.sun_path, path);
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		die(3, "socket: %s", strerror(errno));
	if (connect(s, (struct sockaddr *)&sun, sizeof(sun)) != 0)
		die(3, "%s: %s (is ggate-kernel running there?)", path,
		    strerror(errno));
	return (s);
}

static void
run_load(int s, int unit, uint32_t cmd, uint32_t depth, uint32_t flags,
    int64_t length, int64_t dur_ms, uint64_t seed, int64_t grace_ms,
    struct load_result *r)
{
	uint8_t req[48], rep[64];
	struct emu_hdr h;

	emu_put32(req + 0, (uint32_t)unit);
	emu_put32(req + 4, cmd);
	emu_put32(req + 8, depth);
	emu_put32(req + 12, flags);
	emu_put64(req + 16, (uint64_t)length);
	emu_put64(req + 24, (uint64_t)dur_ms);
	emu_put64(req + 32, seed);
	emu_put64(req + 40, (uint64_t)grace_ms);
	if (emu_send(s, EMU_OP_RUN_LOAD, 0, req, sizeof(req), NULL, 0) != 0)
		die(3, "sending RUN_LOAD: %s", strerror(errno));
	if (emu_recv_hdr(s, &h) != 0)
		die(3, "waiting for RUN_LOAD's reply: %s", strerror(errno));
	if (h.op != EMU_OP_RUN_LOAD)
		die(3, "the kernel answered op %u to RUN_LOAD", h.op);
	if (h.status != 0) {
		emu_skip(s, h.len);
		switch (h.status) {
		case ENXIO:
			die(3, "RUN_LOAD: no unit ggate%d (is its daemon "
			    "serving?)", unit);
			break;
		case EINVAL:
			die(3, "RUN_LOAD: the kernel refused the arguments "
			    "(depth 1..65536, BIO_BYTES a multiple of the "
			    "sector size and at most the media size)");
			break;
		case ENOSYS:
			die(3, "RUN_LOAD: this ggate-kernel has no load "
			    "generator");
			break;
		default:
			die(3, "RUN_LOAD: %s", strerror(h.status));
		}
	}
	if (h.len != sizeof(rep) || emu_read_full(s, rep, sizeof(rep)) != 0)
		die(3, "RUN_LOAD: a %" PRIu64 "-byte reply, expected %zu",
		    h.len, sizeof(rep));
	r->completed = emu_get64(rep + 0);
	r->errors = emu_get64(rep + 8);
	r->bytes = emu_get64(rep + 16);
	r->elapsed_ns = emu_get64(rep + 24);
	r->p50_ns = emu_get64(rep + 32);
	r->p99_ns = emu_get64(rep + 40);
	r->max_ns = emu_get64(rep + 48);
	r->abandoned = emu_get64(rep + 56);
}

static int
load_main(int argc, char *argv[])
{
	struct load_result r, ramp;
	int64_t ramp_ms = 0, grace_ms = 30000, length, dur_ms;
	uint64_t seed = 0;
	uint32_t cmd, flags;
	long unit, depth;
	double secs;
	int ch, s;

	while ((ch = getopt(argc, argv, "+r:g:S:")) != -1) {
		switch (ch) {
		case 'r':
			if ((ramp_ms = parse_ms(optarg)) < 0)
				die(2, "-r: seconds, not '%s'", optarg);
			break;
		case 'g':
			if ((grace_ms = parse_ms(optarg)) < 0)
				die(2, "-g: seconds, not '%s'", optarg);
			break;
		case 'S':
			seed = strtoull(optarg, NULL, 0);
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc != 7)
		usage();
	if ((unit = parse_long(argv[1], 0, G_GATE_MAXUNITS - 1)) == LONG_MIN)
		die(2, "UNIT: 0..%d, not '%s'", G_GATE_MAXUNITS - 1, argv[1]);
	if (strcmp(argv[2], "read") == 0)
		cmd = BIO_READ;
	else if (strcmp(argv[2], "write") == 0)
		cmd = BIO_WRITE;
	else if (strcmp(argv[2], "delete") == 0)
		cmd = BIO_DELETE;
	else if (strcmp(argv[2], "flush") == 0)
		cmd = BIO_FLUSH;
	else
		die(2, "CMD: read, write, delete or flush, not '%s'", argv[2]);
	if ((depth = parse_long(argv[3], 1, 65536)) == LONG_MIN)
		die(2, "DEPTH: 1..65536, not '%s'", argv[3]);
	if ((length = parse_size(argv[4])) <= 0)
		die(2, "BIO_BYTES: a size like 4096, 4k or 1M, not '%s'",
		    argv[4]);
	if ((dur_ms = parse_ms(argv[5])) <= 0)
		die(2, "SECONDS: more than 0 and at most 3600, not '%s'",
		    argv[5]);
	if (strcmp(argv[6], "random") == 0 || strcmp(argv[6], "rand") == 0)
		flags = 1;
	else if (strcmp(argv[6], "seq") == 0 ||
	    strcmp(argv[6], "sequential") == 0)
		flags = 0;
	else
		die(2, "the last argument is random or seq, not '%s'", argv[6]);

	s = kernel_connect(argv[0]);
	if (ramp_ms > 0)
		run_load(s, (int)unit, cmd, (uint32_t)depth, flags, length,
		    ramp_ms, seed, grace_ms, &ramp);
	run_load(s, (int)unit, cmd, (uint32_t)depth, flags, length, dur_ms,
	    seed, grace_ms, &r);
	close(s);

	secs = (double)r.elapsed_ns / 1e9;
	printf("{\"completed\":%" PRIu64 ",\"errors\":%" PRIu64
	    ",\"bytes\":%" PRIu64 ",\"elapsed_s\":%.6f,\"iops\":%.1f"
	    ",\"bytes_per_second\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f"
	    ",\"max_us\":%.1f,\"abandoned\":%" PRIu64 "}\n",
	    r.completed, r.errors, r.bytes, secs,
	    secs > 0 ? (double)r.completed / secs : 0.0,
	    secs > 0 ? (double)r.bytes / secs : 0.0,
	    (double)r.p50_ns / 1e3, (double)r.p99_ns / 1e3,
	    (double)r.max_ns / 1e3, r.abandoned);
	fflush(stdout);
	return (r.errors != 0 || r.abandoned != 0 ? 1 : 0);
}

/* -------------------------------------------------------------------- */
/* serve: the null daemon */

typedef int	(*open_fn)(const char *, int, ...);
typedef int	(*ioctl_fn)(int, unsigned long, ...);
typedef int	(*close_fn)(int);

static open_fn		lib_open;
static ioctl_fn		lib_ioctl;
static close_fn		lib_close;
static const char	*ctl_path;
static int		serve_unit;
static uint8_t		*source;	/* what READs return */
static size_t		source_len;
static pthread_mutex_t	live_lock = PTHREAD_MUTEX_INITIALIZER;
static int		live_workers;

/* An ioctl through the library: 0 or the errno. */
static int
lib_call(int fd, unsigned long req, void *arg)
{
	return (lib_ioctl(fd, req, arg) == 0 ? 0 : errno);
}

static void *
worker(void *arg)
{
	struct g_gate_ctl_io io;
	uint8_t *buf;
	size_t cap = 128 * 1024, len, off, n;
	int fd = (int)(intptr_t)arg, error;

	buf = malloc(cap);
	if (buf == NULL)
		die(1, "out of memory");
	for (;;) {
		memset(&io, 0, sizeof(io));
		io.gctl_version = G_GATE_VERSION;
		io.gctl_unit = serve_unit;
		io.gctl_data = (uint64_t)(uintptr_t)buf;
		io.gctl_length = (fb_off_t)cap;
		error = lib_call(fd, G_GATE_CMD_START, &io);
		if (error != 0) {
			if (error != ENXIO)
				fprintf(stderr, PROG ": START: %s\n",
				    strerror(error));
			break;
		}
		if (io.gctl_error == ECANCELED)
			break;		/* the unit is being destroyed */
		if (io.gctl_error == ENOMEM) {
			/* A WRITE longer than our buffer: still queued. */
			free(buf);
			cap = (size_t)io.gctl_length;
			if ((buf = malloc(cap)) == NULL)
				die(1, "out of memory");
			continue;
		}
		if (io.gctl_error != 0) {
			fprintf(stderr, PROG ": START reported %s\n",
			    strerror(io.gctl_error));
			continue;
		}
		len = (size_t)io.gctl_length;
		io.gctl_error = 0;
		switch (io.gctl_cmd) {
		case BIO_READ:
			if (len > cap) {
				free(buf);
				cap = len;
				if ((buf = malloc(cap)) == NULL)
					die(1, "out of memory");
			}
			/* The copy the daemon makes from its NBD reply. */
			off = (size_t)((uint64_t)io.gctl_offset % source_len);
			for (n = 0; n < len; ) {
				size_t chunk = source_len - off;

				if (chunk > len - n)
					chunk = len - n;
				memcpy(buf + n, source + off, chunk);
				n += chunk;
				off = 0;
			}
			break;
		case BIO_WRITE:
		case BIO_DELETE:
		case BIO_FLUSH:
			break;
		default:
			io.gctl_error = EOPNOTSUPP;
			break;
		}
		io.gctl_data = (uint64_t)(uintptr_t)buf;
		error = lib_call(fd, G_GATE_CMD_DONE, &io);
		if (error != 0) {
			if (error != ENOENT && error != ENXIO)
				fprintf(stderr, PROG ": DONE: %s\n",
				    strerror(error));
			if (error == ENOENT || error == ENXIO)
				break;
		}
	}
	free(buf);
	lib_close(fd);
	pthread_mutex_lock(&live_lock);
	if (--live_workers == 0)
		kill(getpid(), SIGTERM);	/* unit gone: wake main */
	pthread_mutex_unlock(&live_lock);
	return (NULL);
}

static int
serve_main(int argc, char *argv[])
{
	struct g_gate_ctl_create cr;
	struct g_gate_ctl_destroy ds;
	pthread_t *tds;
	sigset_t sigs;
	void *lib, *sym;
	int64_t mediasize;
	long workers = 32, sector = 512, queue = 1024, unit;
	int ch, fd, error, sig, i;
	uint64_t x;

	optind = 1;
	while ((ch = getopt(argc, argv, "+w:s:q:")) != -1) {
		switch (ch) {
		case 'w':
			if ((workers = parse_long(optarg, 1, 4096)) ==
			    LONG_MIN)
				die(2, "-w: 1..4096, not '%s'", optarg);
			break;
		case 's':
			if ((sector = parse_long(optarg, 1, 1 << 20)) ==
			    LONG_MIN || (sector & (sector - 1)) != 0)
				die(2, "-s: a power of two, not '%s'", optarg);
			break;
		case 'q':
			if ((queue = parse_long(optarg, 0,
			    G_GATE_MAX_QUEUE_SIZE)) == LONG_MIN)
				die(2, "-q: 0..%d, not '%s'",
				    G_GATE_MAX_QUEUE_SIZE, optarg);
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc != 4)
		usage();
	ctl_path = argv[1];
	if ((unit = parse_long(argv[2], 0, G_GATE_MAXUNITS - 1)) == LONG_MIN)
		die(2, "UNIT: 0..%d, not '%s'", G_GATE_MAXUNITS - 1, argv[2]);
	if ((mediasize = parse_size(argv[3])) <= 0 || mediasize % sector != 0)
		die(2, "MEDIASIZE: a multiple of the sector size, not '%s'",
		    argv[3]);

	lib = dlopen(argv[0], RTLD_NOW | RTLD_LOCAL);
	if (lib == NULL)
		die(3, "%s", dlerror());
	/* POSIX's way from dlsym()'s void * to a function pointer. */
	sym = dlsym(lib, "open");
	memcpy(&lib_open, &sym, sizeof(sym));
	sym = dlsym(lib, "ioctl");
	memcpy(&lib_ioctl, &sym, sizeof(sym));
	sym = dlsym(lib, "close");
	memcpy(&lib_close, &sym, sizeof(sym));
	if (lib_open == NULL || lib_ioctl == NULL || lib_close == NULL)
		die(3, "%s does not export open, ioctl and close", argv[0]);

	/* Random bytes to read from, so that a READ copies real data. */
	source_len = 1 << 20;
	if ((source = malloc(source_len)) == NULL)
		die(1, "out of memory");
	x = (uint64_t)time(NULL) | 1;
	for (size_t k = 0; k < source_len; k += 8) {
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		memcpy(source + k, &(uint64_t){ x * 0x2545F4914F6CDD1Dull },
		    8);
	}

	/* Signals are taken by sigwait() in this thread only. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	if ((fd = lib_open(ctl_path, O_RDWR)) < 0)
		die(3, "%s: %s", ctl_path, strerror(errno));
	memset(&cr, 0, sizeof(cr));
	cr.gctl_version = G_GATE_VERSION;
	cr.gctl_mediasize = mediasize;
	cr.gctl_sectorsize = (fb_u_int)sector;
	cr.gctl_maxcount = (fb_u_int)queue;
	cr.gctl_unit = (int)unit;
	snprintf(cr.gctl_info, sizeof(cr.gctl_info), "ggate-load null daemon");
	if ((error = lib_call(fd, G_GATE_CMD_CREATE, &cr)) != 0)
		die(3, "CREATE ggate%ld: %s", unit, strerror(error));
	serve_unit = cr.gctl_unit;

	tds = calloc((size_t)workers, sizeof(*tds));
	if (tds == NULL)
		die(1, "out of memory");
	live_workers = (int)workers;
	for (i = 0; i < workers; i++) {
		int wfd = lib_open(ctl_path, O_RDWR);

		if (wfd < 0)
			die(3, "%s: %s", ctl_path, strerror(errno));
		if (pthread_create(&tds[i], NULL, worker,
		    (void *)(intptr_t)wfd) != 0)
			die(1, "pthread_create failed");
	}
	printf("%s%d\n", G_GATE_PROVIDER_NAME, serve_unit);
	fflush(stdout);

	sigwait(&sigs, &sig);
	memset(&ds, 0, sizeof(ds));
	ds.gctl_version = G_GATE_VERSION;
	ds.gctl_unit = serve_unit;
	ds.gctl_force = 1;
	error = lib_call(fd, G_GATE_CMD_DESTROY, &ds);
	if (error != 0 && error != ENXIO)
		fprintf(stderr, PROG ": DESTROY: %s\n", strerror(error));
	for (i = 0; i < workers; i++)
		pthread_join(tds[i], NULL);
	lib_close(fd);
	return (0);
}

int
main(int argc, char *argv[])
{
	if (argc > 1 && strcmp(argv[1], "serve") == 0)
		return (serve_main(argc - 1, argv + 1));
	return (load_main(argc, argv));
}
