/*
 * ggate-selftest: proves the emulator against g_gate.c's semantics, going
 * through the library's ioctl() exactly as a daemon would.
 *
 *	usage: ggate-selftest path/to/ggate-kernel path/to/libggate-emu.so
 *
 * It starts the kernel, dlopen()s the library (RTLD_LOCAL, like JNR),
 * and exits non-zero at the first failed check.  Set GGATE_SELFTEST_V=1
 * to have the kernel log every ioctl.
 */
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
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

/* ------------------------------------------------------------------ */
/* Checks. */

static pid_t	server_pid = -1;
static char	sockdir[64];
static char	sockpath[128];

static void
fail(void)
{
	if (server_pid > 0)
		kill(server_pid, SIGKILL);
	if (sockpath[0] != '\0')
		unlink(sockpath);
	if (sockdir[0] != '\0')
		rmdir(sockdir);
	exit(1);
}

#define	CHECK(cond) do {						\
	if (!(cond)) {							\
		fprintf(stderr, "%s:%d: check failed: %s\n",		\
		    __FILE__, __LINE__, #cond);				\
		fail();							\
	}								\
} while (0)

#define	CHECK_EQ(a, b) do {						\
	long long a_ = (long long)(a), b_ = (long long)(b);		\
	if (a_ != b_) {							\
		fprintf(stderr, "%s:%d: check failed: %s == %s "	\
		    "(%lld != %lld)\n", __FILE__, __LINE__, #a, #b,	\
		    a_, b_);						\
		fail();							\
	}								\
} while (0)

static void
section(const char *name)
{
	printf("ggate-selftest: %s\n", name);
	fflush(stdout);
}

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000);
}

static void
sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000,
	    .tv_nsec = (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* ------------------------------------------------------------------ */
/* The library, as JNR would load it. */

static int	(*e_open)(const char *, int, ...);
static int	(*e_ioctl)(int, unsigned long, ...);
static int	(*e_close)(int);

static void
load_library(const char *path)
{
	void *h, *p_open, *p_ioctl, *p_close;

	h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		fail();
	}
	p_open = dlsym(h, "open");
	p_ioctl = dlsym(h, "ioctl");
	p_close = dlsym(h, "close");
	CHECK(p_open != NULL && p_ioctl != NULL && p_close != NULL);
	/* Ours, not the C library's that the process already has. */
	CHECK(p_open != dlsym(RTLD_DEFAULT, "open"));
	CHECK(p_close != dlsym(RTLD_DEFAULT, "close"));
	/* And nothing else leaks out that the JVM could trip over. */
	CHECK(dlsym(h, "emu_send") == NULL);
	CHECK(dlsym(h, "emu_read_full") == NULL);
	/* POSIX's way from dlsym() to a function pointer. */
	memcpy(&e_open, &p_open, sizeof(e_open));
	memcpy(&e_ioctl, &p_ioctl, sizeof(e_ioctl));
	memcpy(&e_close, &p_close, sizeof(e_close));
}

static int
gg_open(void)
{
	int fd;

	fd = e_open(G_GATE_CTL_PATH, O_RDWR);
	CHECK(fd >= 0);
	return (fd);
}

/* ioctl(); returns 0 or the errno. */
static int
gg_ioctl(int fd, unsigned long req, void *arg)
{
	return (e_ioctl(fd, req, arg) == 0 ? 0 : errno);
}

static void
create_init(struct g_gate_ctl_create *c, int unit, int64_t size, unsigned ss)
{
	memset(c, 0, sizeof(*c));
	c->gctl_version = G_GATE_VERSION;
	c->gctl_mediasize = size;
	c->gctl_sectorsize = ss;
	c->gctl_unit = unit;
	snprintf(c->gctl_info, sizeof(c->gctl_info), "selftest %d", unit);
}

/* CREATE with the usual shape; returns the unit. */
static int
gg_create(int fd, int unit, uint32_t flags, uint32_t maxcount,
    uint32_t timeout)
{
	struct g_gate_ctl_create c;

	create_init(&c, unit, 1 << 20, 512);
	c.gctl_flags = flags;
	c.gctl_maxcount = maxcount;
	c.gctl_timeout = timeout;
	CHECK_EQ(gg_ioctl(fd, G_GATE_CMD_CREATE, &c), 0);
	return (c.gctl_unit);
}

static int
gg_destroy(int fd, int unit, int force)
{
	struct g_gate_ctl_destroy d;

	memset(&d, 0, sizeof(d));
	d.gctl_version = G_GATE_VERSION;
	d.gctl_unit = unit;
	d.gctl_force = force;
	return (gg_ioctl(fd, G_GATE_CMD_DESTROY, &d));
}

static int
gg_cancel(int fd, int unit, uint64_t seq)
{
	struct g_gate_ctl_cancel c;

	memset(&c, 0, sizeof(c));
	c.gctl_version = G_GATE_VERSION;
	c.gctl_unit = unit;
	c.gctl_seq = seq;
	return (gg_ioctl(fd, G_GATE_CMD_CANCEL, &c));
}

/* START into buf; returns the ioctl's errno; *io has the result. */
static int
gg_start(int fd, int unit, void *buf, int64_t buflen, struct g_gate_ctl_io *io)
{
	memset(io, 0, sizeof(*io));
	io->gctl_version = G_GATE_VERSION;
	io->gctl_unit = unit;
	io->gctl_data = (uint64_t)(uintptr_t)buf;
	io->gctl_length = buflen;
	io->gctl_error = 0;
	return (gg_ioctl(fd, G_GATE_CMD_START, io));
}

static int
gg_done(int fd, struct g_gate_ctl_io *io, int error, void *data)
{
	io->gctl_error = error;
	io->gctl_data = (uint64_t)(uintptr_t)data;
	return (gg_ioctl(fd, G_GATE_CMD_DONE, io));
}

/* ------------------------------------------------------------------ */
/* Test control, over its own connections. */

static int
ctl_connect(void)
{
	struct sockaddr_un sun;
	int s;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	strcpy(sun.sun_path, sockpath);
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(s >= 0);
	CHECK(connect(s, (struct sockaddr *)&sun, sizeof(sun)) == 0);
	return (s);
}

/* One request, one reply; returns the status, body in *out (malloc'd). */
static int
ctl_call(uint32_t op, const void *body, size_t len, const void *data,
    size_t dlen, uint8_t **out, size_t *outlen)
{
	struct emu_hdr h;
	uint8_t *buf;
	int s;

	s = ctl_connect();
	CHECK(emu_send(s, op, 0, body, len, data, dlen) == 0);
	CHECK(emu_recv_hdr(s, &h) == 0);
	CHECK_EQ(h.op, op);
	buf = malloc(h.len + 1);
	CHECK(buf != NULL);
	CHECK(emu_read_full(s, buf, h.len) == 0);
	shutdown(s, SHUT_RDWR);
	e_close(s);		/* not ours: it must reach the real close */
	if (out != NULL) {
		*out = buf;
		*outlen = h.len;
	} else {
		free(buf);
	}
	return (h.status);
}

static uint64_t
ctl_queue(int unit, int cmd, int64_t offset, int64_t length, const void *data)
{
	uint8_t b[24], *out;
	size_t outlen;
	uint64_t id;

	emu_put32(b, (uint32_t)unit);
	emu_put32(b + 4, (uint32_t)cmd);
	emu_put64(b + 8, (uint64_t)offset);
	emu_put64(b + 16, (uint64_t)length);
	CHECK_EQ(ctl_call(EMU_OP_QUEUE_BIO, b, sizeof(b), data,
	    cmd == BIO_WRITE ? (size_t)length : 0, &out, &outlen), 0);
	CHECK_EQ(outlen, 8);
	id = emu_get64(out);
	free(out);
	return (id);
}

/* QUEUE_BIO's status alone (for the failures: no id then). */
static int
ctl_queue_status(int unit, int cmd, int64_t offset, int64_t length)
{
	uint8_t b[24];

	emu_put32(b, (uint32_t)unit);
	emu_put32(b + 4, (uint32_t)cmd);
	emu_put64(b + 8, (uint64_t)offset);
	emu_put64(b + 16, (uint64_t)length);
	return (ctl_call(EMU_OP_QUEUE_BIO, b, sizeof(b), NULL, 0, NULL, NULL));
}

/*
 * Waits for a control bio.  Returns the await status (0, ETIMEDOUT,
 * ENOENT); *error gets the bio's error and, for a READ, data its bytes.
 */
static int
ctl_await(uint64_t id, int64_t timeout_ms, int *error, void *data,
    size_t *datalen)
{
	uint8_t b[24] = { 0 }, *out;
	size_t outlen, n;
	int status;

	emu_put64(b, id);
	emu_put64(b + 8, (uint64_t)timeout_ms);
	status = ctl_call(EMU_OP_AWAIT_BIO, b, sizeof(b), NULL, 0, &out,
	    &outlen);
	if (status == 0) {
		CHECK(outlen >= 16);
		*error = (int)emu_get32(out);
		n = emu_get64(out + 8);
		CHECK_EQ(outlen, 16 + n);
		if (data != NULL)
			memcpy(data, out + 16, n);
		if (datalen != NULL)
			*datalen = n;
	}
	free(out);
	return (status);
}

/* The bio's error, which must arrive within timeout_ms. */
static int
ctl_result(uint64_t id, int64_t timeout_ms)
{
	int error = -1;

	CHECK_EQ(ctl_await(id, timeout_ms, &error, NULL, NULL), 0);
	return (error);
}

static bool
ctl_pending(uint64_t id)
{
	uint8_t b[24] = { 0 };
	int status;

	/* A peek: ETIMEDOUT means still in the kernel's hands. */
	emu_put64(b, id);
	emu_put64(b + 8, 0);
	emu_put32(b + 16, 1);
	status = ctl_call(EMU_OP_AWAIT_BIO, b, sizeof(b), NULL, 0, NULL, NULL);
	CHECK(status == 0 || status == ETIMEDOUT);
	return (status == ETIMEDOUT);
}

struct unit_info {
	int		unit;
	uint32_t	flags;
	int64_t		mediasize;
	uint32_t	sectorsize, timeout, queue_size, queue_count;
	uint32_t	nin, nout;
	uint64_t	next_seq;
	int		acr, acw, ace, refs;
	char		name[256];
	char		info[G_GATE_INFOSIZE];
};

static uint32_t	sign_warnings;

/* The unit's record; false when there is no such unit. */
static bool
ctl_unit(int unit, struct unit_info *ui)
{
	uint8_t *out, *p;
	size_t outlen;
	uint32_t count, i, nlen, ilen;
	bool found = false;

	CHECK_EQ(ctl_call(EMU_OP_LIST_UNITS, NULL, 0, NULL, 0, &out, &outlen),
	    0);
	CHECK(outlen >= 8);
	count = emu_get32(out);
	sign_warnings = emu_get32(out + 4);
	p = out + 8;
	for (i = 0; i < count; i++) {
		CHECK((size_t)(p + 72 - out) <= outlen);
		nlen = emu_get32(p + 64);
		ilen = emu_get32(p + 68);
		CHECK((size_t)(p + 72 + nlen + ilen - out) <= outlen);
		if ((int)emu_get32(p) == unit) {
			found = true;
			memset(ui, 0, sizeof(*ui));
			ui->unit = (int)emu_get32(p);
			ui->flags = emu_get32(p + 4);
			ui->mediasize = (int64_t)emu_get64(p + 8);
			ui->sectorsize = emu_get32(p + 16);
			ui->timeout = emu_get32(p + 20);
			ui->queue_size = emu_get32(p + 24);
			ui->queue_count = emu_get32(p + 28);
			ui->nin = emu_get32(p + 32);
			ui->nout = emu_get32(p + 36);
			ui->next_seq = emu_get64(p + 40);
			ui->acr = (int)emu_get32(p + 48);
			ui->acw = (int)emu_get32(p + 52);
			ui->ace = (int)emu_get32(p + 56);
			ui->refs = (int)emu_get32(p + 60);
			memcpy(ui->name, p + 72, nlen);
			memcpy(ui->info, p + 72 + nlen, ilen);
		}
		p += 72 + nlen + ilen;
	}
	CHECK((size_t)(p - out) == outlen);
	free(out);
	return (found);
}

static struct unit_info
unit_info(int unit)
{
	struct unit_info ui;

	CHECK(ctl_unit(unit, &ui));
	return (ui);
}

/* Waits until `refs` ioctls hold the unit (STARTs asleep in it). */
static void
wait_refs(int unit, int refs)
{
	uint64_t deadline = now_ms() + 5000;

	while (unit_info(unit).refs != refs) {
		CHECK(now_ms() < deadline);
		sleep_ms(5);
	}
}

static int
ctl_access(int unit, int r, int w, int e)
{
	uint8_t b[16];

	emu_put32(b, (uint32_t)unit);
	emu_put32(b + 4, (uint32_t)r);
	emu_put32(b + 8, (uint32_t)w);
	emu_put32(b + 12, (uint32_t)e);
	return (ctl_call(EMU_OP_SET_ACCESS, b, sizeof(b), NULL, 0, NULL,
	    NULL));
}

struct load_result {
	uint64_t	completed, errors, bytes, elapsed_ns;
	uint64_t	p50_ns, p99_ns, max_ns, abandoned;
};

static int
ctl_load(int unit, int cmd, uint32_t depth, bool random, int64_t length,
    uint64_t ms, uint64_t grace_ms, struct load_result *r)
{
	uint8_t b[48], *out;
	size_t outlen;
	int status;

	emu_put32(b, (uint32_t)unit);
	emu_put32(b + 4, (uint32_t)cmd);
	emu_put32(b + 8, depth);
	emu_put32(b + 12, random ? 1 : 0);
	emu_put64(b + 16, (uint64_t)length);
	emu_put64(b + 24, ms);
	emu_put64(b + 32, 42);
	emu_put64(b + 40, grace_ms);
	status = ctl_call(EMU_OP_RUN_LOAD, b, sizeof(b), NULL, 0, &out,
	    &outlen);
	if (status == 0) {
		CHECK_EQ(outlen, 64);
		r->completed = emu_get64(out);
		r->errors = emu_get64(out + 8);
		r->bytes = emu_get64(out + 16);
		r->elapsed_ns = emu_get64(out + 24);
		r->p50_ns = emu_get64(out + 32);
		r->p99_ns = emu_get64(out + 40);
		r->max_ns = emu_get64(out + 48);
		r->abandoned = emu_get64(out + 56);
	}
	free(out);
	return (status);
}

/* ------------------------------------------------------------------ */
/* The server. */

static int	server_stdin = -1;

static void
start_server(const char *kernel)
{
	int in[2], out[2];
	char line[256];
	ssize_t n;
	size_t got = 0;

	strcpy(sockdir, "/tmp/ggate-selftest.XXXXXX");
	CHECK(mkdtemp(sockdir) != NULL);
	snprintf(sockpath, sizeof(sockpath), "%s/ggctl.sock", sockdir);
	/* Close-on-exec: the server must hold no write end of its stdin. */
	CHECK(pipe2(in, O_CLOEXEC) == 0 && pipe2(out, O_CLOEXEC) == 0);
	server_pid = fork();
	CHECK(server_pid >= 0);
	if (server_pid == 0) {
		dup2(in[0], STDIN_FILENO);
		dup2(out[1], STDOUT_FILENO);
		if (getenv("GGATE_SELFTEST_V") != NULL)
			execl(kernel, "ggate-kernel", "-v", sockpath,
			    (char *)NULL);
		else
			execl(kernel, "ggate-kernel", sockpath, (char *)NULL);
		perror(kernel);
		_exit(127);
	}
	e_close(in[0]);
	e_close(out[1]);
	server_stdin = in[1];
	/* "ready <path>\n" once it listens. */
	while (got < sizeof(line) - 1 && memchr(line, '\n', got) == NULL) {
		n = read(out[0], line + got, sizeof(line) - 1 - got);
		CHECK(n > 0);
		got += (size_t)n;
	}
	line[got] = '\0';
	CHECK(strncmp(line, "ready ", 6) == 0);
	e_close(out[0]);
}

/* Closing its stdin must stop it, cleanly, and remove the socket. */
static void
stop_server(void)
{
	struct stat sb;
	uint64_t deadline = now_ms() + 5000;
	int status;
	pid_t p;

	e_close(server_stdin);
	while ((p = waitpid(server_pid, &status, WNOHANG)) == 0) {
		CHECK(now_ms() < deadline);
		sleep_ms(10);
	}
	CHECK_EQ(p, server_pid);
	server_pid = -1;
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(stat(sockpath, &sb) != 0 && errno == ENOENT);
	rmdir(sockdir);
}

/* ------------------------------------------------------------------ */
/* A daemon worker thread: serves READs with a pattern, the rest with 0. */

struct worker {
	pthread_t	td;
	int		unit;
	int		fd;
	bool		own_fd;
	uint64_t	served;
	int		exit_error;	/* gctl_error that ended the loop */
};

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct g_gate_ctl_io io;
	size_t cap = 4096;
	uint8_t *buf = malloc(cap);
	int error;

	for (;;) {
		error = gg_start(w->fd, w->unit, buf, (int64_t)cap, &io);
		if (error != 0) {
			w->exit_error = error;
			break;
		}
		if (io.gctl_error == ENOMEM) {
			cap = (size_t)io.gctl_length;
			buf = realloc(buf, cap);
			continue;
		}
		if (io.gctl_error != 0) {
			w->exit_error = io.gctl_error;
			break;
		}
		if (io.gctl_cmd == BIO_READ) {
			if ((size_t)io.gctl_length > cap) {
				cap = (size_t)io.gctl_length;
				buf = realloc(buf, cap);
			}
			memset(buf, (int)(io.gctl_offset / 512) & 0xff,
			    (size_t)io.gctl_length);
		}
		CHECK_EQ(gg_done(w->fd, &io, 0, buf), 0);
		w->served++;
	}
	free(buf);
	return (NULL);
}

static void
worker_start(struct worker *w, int unit, int fd)
{
	memset(w, 0, sizeof(*w));
	w->unit = unit;
	w->own_fd = fd < 0;
	w->fd = fd < 0 ? gg_open() : fd;
	CHECK(pthread_create(&w->td, NULL, worker_main, w) == 0);
}

static void
worker_join(struct worker *w)
{
	CHECK(pthread_join(w->td, NULL) == 0);
	if (w->own_fd)
		CHECK_EQ(e_close(w->fd), 0);
}

/* ------------------------------------------------------------------ */
/* The tests. */

static void
test_paths(void)
{
	int fd;

	section("open(): emulated and real paths");
	unsetenv("GGATE_EMU_SOCKET");
	errno = 0;
	CHECK(e_open(G_GATE_CTL_PATH, O_RDWR) == -1 && errno == ENOENT);
	setenv("GGATE_EMU_SOCKET", sockpath, 1);
	fd = e_open(G_GATE_CTL_PATH, O_RDWR);
	CHECK(fd >= 0);
	CHECK_EQ(e_close(fd), 0);
	/* The socket's own path works too (what the Java tests use). */
	fd = e_open(sockpath, O_RDWR);
	CHECK(fd >= 0);
	CHECK_EQ(e_close(fd), 0);
	/* Anything else is the real open(), ioctl() and close(). */
	fd = e_open("/dev/null", O_RDONLY);
	CHECK(fd >= 0);
	CHECK(e_ioctl(fd, G_GATE_CMD_START, NULL) == -1 && errno == ENOTTY);
	CHECK_EQ(e_close(fd), 0);
	CHECK(e_close(fd) == -1 && errno == EBADF);
}

static void
test_create(int fd)
{
	struct g_gate_ctl_create c;
	struct g_gate_ctl_io io;
	struct unit_info ui;

	section("CREATE: validation, units, version");
	create_init(&c, G_GATE_UNIT_AUTO, 0, 512);
	CHECK_EQ(gg_ioctl(fd, G_GATE_CMD_CREATE, &c), EINVAL);
	create_init(&c, G_GATE_UNIT_AUTO, 1 << 20, 0);
	CHECK_EQ(gg_ioctl(fd, G_GATE_CMD_CREATE, &c), EINVAL);
	create_init(&c, G_GATE_UNIT_AUTO, 3 * 1000, 1000);	/* not 2^n */
	CHECK_EQ(gg_ioctl(fd, G_GATE_CMD_CREATE, &c), EINVAL);
	create_init(&c, G_GATE_UNIT_AUTO, 1000, 512);		/* not k*512 */
	CHECK_EQ(gg_ioctl(fd, G_GATE_CMD_CREATE, &c), EINVAL);
	create_init(&c, G_GATE_UNIT_AUTO, 1 << 20, 512);
	c.gctl_flags = G_GATE_FLAG_READONLY | G_GATE_FLAG_WRITEONLY;
	CHECK_EQ(gg_ioctl(fd, G_GATE_CMD_CREATE, &c), EINVAL);
	create_init(&c, -3, 1 << 20, 512);
	CHECK_EQ(gg_ioctl(fd, G_GATE_CMD_CREATE, &c), EINVAL);
	create_init(&c, G_GATE_MAXUNITS, 1 << 20, 512);
	CHECK_EQ(gg_ioctl(fd, G_GATE_CMD_CREATE, &c), EINVAL);
	create_init(&c, G_GATE_NAME_GIVEN, 1 << 20, 512);	/* no name */
	CHECK_EQ(gg_ioctl(fd, G_GATE_CMD_CREATE, &c), EINVAL);
	create_init(&c, G_GATE_UNIT_AUTO, 1 << 20, 512);
	strcpy(c.gctl_readprov, "ada0");	/* no such provider here */
	CHECK_EQ(gg_ioctl(fd, G_GATE_CMD_CREATE, &c), EINVAL);

	/* A failed ioctl copies nothing out. */
	create_init(&c, G_GATE_UNIT_AUTO, 1 << 20, 512);
	c.gctl_version = 2;
	CHECK_EQ(gg_ioctl(fd, G_GATE_CMD_CREATE, &c), EINVAL);
	CHECK_EQ(c.gctl_unit, G_GATE_UNIT_AUTO);

	/* Units: -1 takes the first free one, a taken one is EEXIST. */
	CHECK_EQ(gg_create(fd, G_GATE_UNIT_AUTO, 0, 0, 0), 0);
	CHECK_EQ(gg_create(fd, G_GATE_UNIT_AUTO, 0, 0, 0), 1);
	CHECK_EQ(gg_create(fd, 5, 0, 0, 0), 5);
	create_init(&c, 1, 1 << 20, 512);
	CHECK_EQ(gg_ioctl(fd, G_GATE_CMD_CREATE, &c), EEXIST);
	create_init(&c, G_GATE_NAME_GIVEN, 1 << 20, 512);
	strcpy(c.gctl_name, "ggate5");		/* name collision */
	CHECK_EQ(gg_ioctl(fd, G_GATE_CMD_CREATE, &c), EEXIST);
	CHECK_EQ(gg_create(fd, G_GATE_UNIT_AUTO, 0, 0, 0), 2);

	ui = unit_info(5);
	CHECK(strcmp(ui.name, "ggate5") == 0);
	CHECK(strcmp(ui.info, "selftest 5") == 0);
	CHECK_EQ(ui.mediasize, 1 << 20);
	CHECK_EQ(ui.sectorsize, 512);
	CHECK_EQ(ui.next_seq, 1);

	/* maxcount is capped. */
	CHECK_EQ(gg_create(fd, 6, 0, 100000, 0), 6);
	CHECK_EQ(unit_info(6).queue_size, G_GATE_MAX_QUEUE_SIZE);

	/* Version is checked on every command. */
	memset(&io, 0, sizeof(io));
	io.gctl_version = G_GATE_VERSION + 1;
	io.gctl_unit = 0;
	CHECK_EQ(gg_ioctl(fd, G_GATE_CMD_START, &io), EINVAL);
	CHECK_EQ(gg_ioctl(fd, G_GATE_CMD_DONE, &io), EINVAL);
	/* An ioctl g_gate does not know. */
	CHECK_EQ(gg_ioctl(fd, FB_IOWR('m', 9, struct g_gate_ctl_io), &io),
	    ENOTTY);

	/* A sign-extended request still works, with a kernel warning. */
	create_init(&c, 7, 1 << 20, 512);
	CHECK_EQ(gg_ioctl(fd, (unsigned long)(long)(int)G_GATE_CMD_CREATE,
	    &c), 0);
	CHECK_EQ(c.gctl_unit, 7);
	unit_info(7);
	CHECK_EQ(sign_warnings, 1);

	for (int u = 0; u <= 7; u++)
		if (u != 3 && u != 4)
			CHECK_EQ(gg_destroy(fd, u, 0), 0);
	CHECK(!ctl_unit(0, &ui));
}

static void
test_missing_unit(int fd)
{
	struct g_gate_ctl_modify m;
	struct g_gate_ctl_io io;

	section("a missing unit: ENXIO, and ENOENT for DONE");
	CHECK_EQ(gg_start(fd, 42, NULL, 0, &io), ENXIO);
	io.gctl_seq = 1;
	CHECK_EQ(gg_done(fd, &io, 0, NULL), ENOENT);
	CHECK_EQ(gg_cancel(fd, 42, 0), ENXIO);
	CHECK_EQ(gg_destroy(fd, 42, 1), ENXIO);
	memset(&m, 0, sizeof(m));
	m.gctl_version = G_GATE_VERSION;
	m.gctl_unit = 42;
	m.gctl_modify = GG_MODIFY_INFO;
	CHECK_EQ(gg_ioctl(fd, G_GATE_CMD_MODIFY, &m), ENXIO);
}

static void
test_io(int fd)
{
	struct g_gate_ctl_io io;
	uint8_t wdata[4096], buf[65536], rdata[4096];
	uint64_t w, r, d, f, big;
	size_t n;
	int unit, error;

	section("START/DONE: WRITE, READ, DELETE, FLUSH, sequence numbers");
	unit = gg_create(fd, G_GATE_UNIT_AUTO, 0, 0, 0);
	for (size_t i = 0; i < sizeof(wdata); i++)
		wdata[i] = (uint8_t)(i * 7);
	w = ctl_queue(unit, BIO_WRITE, 8192, sizeof(wdata), wdata);
	r = ctl_queue(unit, BIO_READ, 4096, sizeof(rdata), NULL);
	d = ctl_queue(unit, BIO_DELETE, 0, 65536, NULL);
	f = ctl_queue(unit, BIO_FLUSH, 1 << 20, 0, NULL);
	CHECK_EQ(unit_info(unit).nin, 4);
	CHECK_EQ(unit_info(unit).queue_count, 4);

	CHECK_EQ(gg_start(fd, unit, buf, sizeof(buf), &io), 0);
	CHECK_EQ(io.gctl_error, 0);
	CHECK_EQ(io.gctl_seq, 1);
	CHECK_EQ(io.gctl_cmd, BIO_WRITE);
	CHECK_EQ(io.gctl_offset, 8192);
	CHECK_EQ(io.gctl_length, sizeof(wdata));
	CHECK(memcmp(buf, wdata, sizeof(wdata)) == 0);
	CHECK_EQ(unit_info(unit).nout, 1);
	CHECK(ctl_pending(w));
	CHECK_EQ(gg_done(fd, &io, 0, NULL), 0);
	CHECK(!ctl_pending(w));			/* done, and still there */
	CHECK_EQ(ctl_result(w, 1000), 0);

	CHECK_EQ(gg_start(fd, unit, buf, sizeof(buf), &io), 0);
	CHECK_EQ(io.gctl_seq, 2);
	CHECK_EQ(io.gctl_cmd, BIO_READ);
	CHECK_EQ(io.gctl_length, 4096);
	memset(buf, 0x5a, sizeof(buf));
	/* The kernel copies bio_length bytes, whatever gctl_length says. */
	io.gctl_length = 512;
	CHECK_EQ(gg_done(fd, &io, 0, buf), 0);
	memset(rdata, 0, sizeof(rdata));
	CHECK_EQ(ctl_await(r, 1000, &error, rdata, &n), 0);
	CHECK_EQ(error, 0);
	CHECK_EQ(n, 4096);
	CHECK(rdata[0] == 0x5a && rdata[4095] == 0x5a);

	CHECK_EQ(gg_start(fd, unit, buf, sizeof(buf), &io), 0);
	CHECK_EQ(io.gctl_seq, 3);
	CHECK_EQ(io.gctl_cmd, BIO_DELETE);
	CHECK_EQ(io.gctl_length, 65536);
	CHECK_EQ(gg_done(fd, &io, EIO, NULL), 0);	/* a failed bio */
	CHECK_EQ(ctl_result(d, 1000), EIO);

	CHECK_EQ(gg_start(fd, unit, buf, sizeof(buf), &io), 0);
	CHECK_EQ(io.gctl_seq, 4);
	CHECK_EQ(io.gctl_cmd, BIO_FLUSH);
	CHECK_EQ(io.gctl_offset, 1 << 20);
	CHECK_EQ(io.gctl_length, 0);
	CHECK_EQ(gg_done(fd, &io, 0, NULL), 0);
	CHECK_EQ(ctl_result(f, 1000), 0);
	CHECK_EQ(ctl_await(f, 0, &error, NULL, NULL), ENOENT);	/* gone */
	CHECK_EQ(unit_info(unit).queue_count, 0);

	section("START: ENOMEM with the length needed, bio left queued");
	static uint8_t bigdata[131072];
	for (size_t i = 0; i < sizeof(bigdata); i++)
		bigdata[i] = (uint8_t)(i >> 8);
	big = ctl_queue(unit, BIO_WRITE, 0, sizeof(bigdata), bigdata);
	CHECK_EQ(gg_start(fd, unit, buf, 4096, &io), 0);
	CHECK_EQ(io.gctl_error, ENOMEM);
	CHECK_EQ(io.gctl_length, sizeof(bigdata));
	CHECK_EQ(io.gctl_cmd, BIO_WRITE);
	CHECK_EQ(io.gctl_seq, 0);		/* not taken */
	CHECK_EQ(unit_info(unit).nin, 1);
	CHECK_EQ(unit_info(unit).nout, 0);
	uint8_t *grown = malloc((size_t)io.gctl_length);
	CHECK_EQ(gg_start(fd, unit, grown, io.gctl_length, &io), 0);
	CHECK_EQ(io.gctl_error, 0);
	CHECK_EQ(io.gctl_seq, 5);
	CHECK(memcmp(grown, bigdata, sizeof(bigdata)) == 0);
	CHECK_EQ(gg_done(fd, &io, 0, NULL), 0);
	CHECK_EQ(ctl_result(big, 1000), 0);
	free(grown);

	section("DONE: EAGAIN requeues at the head, unknown seq ignored");
	uint64_t a = ctl_queue(unit, BIO_READ, 0, 512, NULL);
	uint64_t b = ctl_queue(unit, BIO_READ, 512, 512, NULL);
	CHECK_EQ(gg_start(fd, unit, buf, sizeof(buf), &io), 0);
	CHECK_EQ(io.gctl_seq, 6);
	CHECK_EQ(gg_done(fd, &io, EAGAIN, buf), 0);
	CHECK_EQ(unit_info(unit).nin, 2);
	CHECK(ctl_pending(a));
	CHECK_EQ(gg_start(fd, unit, buf, sizeof(buf), &io), 0);
	CHECK_EQ(io.gctl_seq, 6);		/* again, before b */
	CHECK_EQ(io.gctl_offset, 0);
	CHECK_EQ(gg_done(fd, &io, 0, buf), 0);
	io.gctl_seq = 999;
	CHECK_EQ(gg_done(fd, &io, 0, buf), 0);	/* silently nothing */
	CHECK_EQ(gg_start(fd, unit, buf, sizeof(buf), &io), 0);
	CHECK_EQ(io.gctl_seq, 7);
	CHECK_EQ(gg_done(fd, &io, 0, buf), 0);
	CHECK_EQ(ctl_result(a, 1000), 0);
	CHECK_EQ(ctl_result(b, 1000), 0);

	section("copyout/copyin through a bad pointer: EFAULT");
	w = ctl_queue(unit, BIO_WRITE, 0, 512, wdata);
	CHECK_EQ(gg_start(fd, unit, NULL, 512, &io), EFAULT);
	CHECK_EQ(unit_info(unit).nin, 1);	/* back at the head */
	CHECK_EQ(unit_info(unit).nout, 0);
	CHECK_EQ(gg_start(fd, unit, buf, sizeof(buf), &io), 0);
	CHECK_EQ(io.gctl_seq, 8);
	CHECK_EQ(gg_done(fd, &io, 0, NULL), 0);
	CHECK_EQ(ctl_result(w, 1000), 0);
	r = ctl_queue(unit, BIO_READ, 0, 512, NULL);
	CHECK_EQ(gg_start(fd, unit, buf, sizeof(buf), &io), 0);
	CHECK_EQ(gg_done(fd, &io, 0, NULL), EFAULT);
	CHECK_EQ(ctl_result(r, 1000), EFAULT);

	section("GEOM's own checks on queued bios");
	CHECK_EQ(ctl_result(ctl_queue(unit, BIO_READ, 100, 512, NULL), 1000),
	    EINVAL);
	CHECK_EQ(ctl_result(ctl_queue(unit, BIO_READ, (1 << 20) + 512, 512,
	    NULL), 1000), EIO);
	CHECK_EQ(ctl_result(ctl_queue(unit, BIO_GETATTR, 0, 0, NULL), 1000),
	    EOPNOTSUPP);
	CHECK_EQ(unit_info(unit).queue_count, 0);

	CHECK_EQ(gg_destroy(fd, unit, 0), 0);
}

static void
test_readonly_and_limits(int fd)
{
	struct g_gate_ctl_io io;
	uint8_t data[512] = { 0 }, buf[512];
	uint64_t ids[4];
	int unit;

	section("READONLY: WRITE, DELETE, FLUSH fail with EPERM, unqueued");
	unit = gg_create(fd, G_GATE_UNIT_AUTO, G_GATE_FLAG_READONLY, 0, 0);
	CHECK_EQ(ctl_result(ctl_queue(unit, BIO_WRITE, 0, 512, data), 1000),
	    EPERM);
	CHECK_EQ(ctl_result(ctl_queue(unit, BIO_DELETE, 0, 512, NULL), 1000),
	    EPERM);
	CHECK_EQ(ctl_result(ctl_queue(unit, BIO_FLUSH, 0, 0, NULL), 1000),
	    EPERM);
	ids[0] = ctl_queue(unit, BIO_READ, 0, 512, NULL);
	CHECK_EQ(unit_info(unit).queue_count, 1);
	CHECK_EQ(unit_info(unit).next_seq, 2);	/* refused ones took none */
	CHECK_EQ(gg_destroy(fd, unit, 1), 0);
	CHECK_EQ(ctl_result(ids[0], 1000), ENXIO);

	section("WRITEONLY: the provider cannot be opened for reading");
	unit = gg_create(fd, G_GATE_UNIT_AUTO, G_GATE_FLAG_WRITEONLY, 0, 0);
	CHECK_EQ(ctl_access(unit, 1, 0, 0), EPERM);
	CHECK_EQ(ctl_access(unit, 0, 1, 0), 0);
	CHECK_EQ(gg_destroy(fd, unit, 0), EBUSY);
	CHECK_EQ(ctl_access(unit, 0, 0, 0), 0);
	CHECK_EQ(gg_destroy(fd, unit, 0), 0);
	CHECK_EQ(ctl_access(unit, 0, 0, 0), ENXIO);

	section("queue limit: more than maxcount queued gives ENOMEM");
	unit = gg_create(fd, G_GATE_UNIT_AUTO, 0, 2, 0);
	/* The check is count > maxcount before adding: maxcount+1 fit. */
	ids[0] = ctl_queue(unit, BIO_READ, 0, 512, NULL);
	ids[1] = ctl_queue(unit, BIO_READ, 512, 512, NULL);
	CHECK_EQ(gg_start(fd, unit, buf, sizeof(buf), &io), 0);	/* out */
	ids[2] = ctl_queue(unit, BIO_READ, 1024, 512, NULL);
	ids[3] = ctl_queue(unit, BIO_READ, 1536, 512, NULL);
	CHECK_EQ(ctl_result(ids[3], 1000), ENOMEM);
	CHECK_EQ(unit_info(unit).queue_count, 3);
	CHECK(ctl_pending(ids[2]));
	CHECK_EQ(gg_done(fd, &io, 0, buf), 0);		/* room again */
	ids[3] = ctl_queue(unit, BIO_READ, 1536, 512, NULL);
	CHECK(ctl_pending(ids[3]));
	CHECK_EQ(gg_destroy(fd, unit, 1), 0);
	for (int i = 1; i < 4; i++)
		CHECK_EQ(ctl_result(ids[i], 1000), ENXIO);
	CHECK_EQ(ctl_result(ids[0], 1000), 0);
}

static void
test_modify(int fd)
{
	struct g_gate_ctl_modify m;
	int unit;

	section("MODIFY: resize, info, read provider");
	unit = gg_create(fd, G_GATE_UNIT_AUTO, 0, 0, 0);
	memset(&m, 0, sizeof(m));
	m.gctl_version = G_GATE_VERSION;
	m.gctl_unit = unit;
	m.gctl_modify = GG_MODIFY_MEDIASIZE;
	m.gctl_mediasize = 4 << 20;
	CHECK_EQ(gg_ioctl(fd, G_GATE_CMD_MODIFY, &m), 0);
	CHECK_EQ(unit_info(unit).mediasize, 4 << 20);
	m.gctl_mediasize = (4 << 20) + 100;
	CHECK_EQ(gg_ioctl(fd, G_GATE_CMD_MODIFY, &m), EINVAL);
	m.gctl_mediasize = 0;
	CHECK_EQ(gg_ioctl(fd, G_GATE_CMD_MODIFY, &m), EINVAL);
	/* MEDIASIZE returns at once: the info is left alone. */
	m.gctl_modify = GG_MODIFY_MEDIASIZE | GG_MODIFY_INFO;
	m.gctl_mediasize = 2 << 20;
	strcpy(m.gctl_info, "ignored");
	CHECK_EQ(gg_ioctl(fd, G_GATE_CMD_MODIFY, &m), 0);
	CHECK(strcmp(unit_info(unit).info, "ignored") != 0);
	m.gctl_modify = GG_MODIFY_INFO;
	strcpy(m.gctl_info, "new info");
	CHECK_EQ(gg_ioctl(fd, G_GATE_CMD_MODIFY, &m), 0);
	CHECK(strcmp(unit_info(unit).info, "new info") == 0);
	m.gctl_modify = GG_MODIFY_READOFFSET;
	CHECK_EQ(gg_ioctl(fd, G_GATE_CMD_MODIFY, &m), EINVAL);
	m.gctl_modify = GG_MODIFY_READPROV;
	strcpy(m.gctl_readprov, "ada0");
	CHECK_EQ(gg_ioctl(fd, G_GATE_CMD_MODIFY, &m), EINVAL);
	m.gctl_readprov[0] = '\0';
	CHECK_EQ(gg_ioctl(fd, G_GATE_CMD_MODIFY, &m), 0);
	CHECK_EQ(gg_destroy(fd, unit, 0), 0);
}

static void
test_cancel(int fd)
{
	struct g_gate_ctl_cancel cn;
	struct g_gate_ctl_io io[3];
	uint8_t buf[512];
	int unit;

	section("CANCEL: one seq, then all, back at the head in order");
	unit = gg_create(fd, G_GATE_UNIT_AUTO, 0, 0, 0);
	for (int i = 0; i < 4; i++)
		ctl_queue(unit, BIO_READ, i * 512, 512, NULL);
	for (int i = 0; i < 3; i++) {
		CHECK_EQ(gg_start(fd, unit, buf, sizeof(buf), &io[i]), 0);
		CHECK_EQ(io[i].gctl_seq, i + 1);
	}
	CHECK_EQ(gg_cancel(fd, unit, 2), 0);	/* in: 2 4, out: 1 3 */
	CHECK_EQ(gg_cancel(fd, unit, 77), 0);	/* unknown: nothing */
	CHECK_EQ(unit_info(unit).nin, 2);
	CHECK_EQ(gg_cancel(fd, unit, 0), 0);	/* in: 1 3 2 4 */
	CHECK_EQ(unit_info(unit).nin, 4);
	CHECK_EQ(unit_info(unit).nout, 0);
	/* DONE for a cancelled bio: silently ignored. */
	CHECK_EQ(gg_done(fd, &io[0], 0, buf), 0);
	CHECK_EQ(unit_info(unit).nin, 4);
	uint64_t order[] = { 1, 3, 2, 4 };
	for (int i = 0; i < 4; i++) {
		CHECK_EQ(gg_start(fd, unit, buf, sizeof(buf), &io[0]), 0);
		CHECK_EQ(io[0].gctl_seq, order[i]);
	}
	/* By name: G_GATE_NAME_GIVEN, and the unit comes back. */
	memset(&cn, 0, sizeof(cn));
	cn.gctl_version = G_GATE_VERSION;
	cn.gctl_unit = G_GATE_NAME_GIVEN;
	snprintf(cn.gctl_name, sizeof(cn.gctl_name), "ggate%d", unit);
	CHECK_EQ(gg_ioctl(fd, G_GATE_CMD_CANCEL, &cn), 0);
	CHECK_EQ(cn.gctl_unit, unit);
	CHECK_EQ(unit_info(unit).nin, 4);
	CHECK_EQ(gg_destroy(fd, unit, 1), 0);
}

/* A daemon dies with bios taken; a new one rescues them (ggatec rescue). */
static void
test_rescue(int fd)
{
	struct g_gate_ctl_io io;
	uint8_t buf[512];
	uint64_t ids[3];
	int unit, sync[2], status, cfd;
	pid_t child;
	char c;

	section("a daemon killed with bios out: CANCEL 0 rescues them");
	unit = gg_create(fd, G_GATE_UNIT_AUTO, 0, 0, 0);
	ids[0] = ctl_queue(unit, BIO_READ, 0, 512, NULL);
	ids[1] = ctl_queue(unit, BIO_READ, 512, 512, NULL);
	CHECK(pipe(sync) == 0);
	child = fork();
	CHECK(child >= 0);
	if (child == 0) {
		cfd = e_open(G_GATE_CTL_PATH, O_RDWR);
		if (cfd < 0 || gg_start(cfd, unit, buf, 512, &io) != 0 ||
		    gg_start(cfd, unit, buf, 512, &io) != 0)
			_exit(1);
		if (write(sync[1], "x", 1) != 1)
			_exit(1);
		gg_start(cfd, unit, buf, 512, &io);	/* sleeps: killed */
		_exit(1);
	}
	e_close(sync[1]);
	CHECK(read(sync[0], &c, 1) == 1);
	e_close(sync[0]);
	wait_refs(unit, 1);		/* its third START is asleep */
	CHECK_EQ(unit_info(unit).nout, 2);
	kill(child, SIGKILL);
	CHECK(waitpid(child, &status, 0) == child);

	/* The dead daemon's START must not swallow a new bio. */
	ids[2] = ctl_queue(unit, BIO_READ, 1024, 512, NULL);
	wait_refs(unit, 0);
	CHECK_EQ(unit_info(unit).nin, 1);
	CHECK_EQ(unit_info(unit).nout, 2);	/* the unit kept them */
	CHECK(ctl_pending(ids[0]));

	CHECK_EQ(gg_cancel(fd, unit, 0), 0);
	CHECK_EQ(unit_info(unit).nin, 3);
	for (int i = 0; i < 3; i++) {
		CHECK_EQ(gg_start(fd, unit, buf, sizeof(buf), &io), 0);
		CHECK_EQ(io.gctl_seq, i + 1);
		CHECK_EQ(gg_done(fd, &io, 0, buf), 0);
		CHECK_EQ(ctl_result(ids[i], 1000), 0);
	}
	CHECK_EQ(gg_destroy(fd, unit, 0), 0);
}

static void
test_destroy(int fd)
{
	struct g_gate_ctl_io io;
	struct worker w;
	uint8_t buf[512];
	uint64_t a, b;
	int unit;

	section("DESTROY: wakes a sleeping START with ECANCELED");
	unit = gg_create(fd, G_GATE_UNIT_AUTO, 0, 0, 0);
	worker_start(&w, unit, -1);
	wait_refs(unit, 1);
	CHECK_EQ(gg_destroy(fd, unit, 0), 0);
	worker_join(&w);
	CHECK_EQ(w.exit_error, ECANCELED);
	/* Gone: START ENXIO, DONE ENOENT. */
	CHECK_EQ(gg_start(fd, unit, buf, sizeof(buf), &io), ENXIO);
	CHECK_EQ(gg_done(fd, &io, 0, buf), ENOENT);

	section("DESTROY: EBUSY while open, force fails the bios with ENXIO");
	unit = gg_create(fd, G_GATE_UNIT_AUTO, 0, 0, 0);
	a = ctl_queue(unit, BIO_READ, 0, 512, NULL);
	b = ctl_queue(unit, BIO_READ, 512, 512, NULL);
	CHECK_EQ(gg_start(fd, unit, buf, sizeof(buf), &io), 0);	/* a out */
	CHECK_EQ(ctl_access(unit, 1, 1, 1), 0);
	CHECK_EQ(unit_info(unit).acw, 1);
	CHECK_EQ(gg_destroy(fd, unit, 0), EBUSY);
	CHECK(ctl_pending(a) && ctl_pending(b));
	CHECK_EQ(gg_destroy(fd, unit, 1), 0);
	CHECK_EQ(ctl_result(a, 1000), ENXIO);
	CHECK_EQ(ctl_result(b, 1000), ENXIO);
	CHECK_EQ(gg_done(fd, &io, 0, buf), ENOENT);
	CHECK_EQ(ctl_queue_status(unit, BIO_READ, 0, 512), ENXIO);
}

/* ggatec's pattern: one thread asleep in START, DONE from another. */
static void
test_shared_fd(int fd)
{
	struct g_gate_ctl_io io;
	struct worker w;
	uint8_t buf[512];
	uint64_t id, t0;
	int unit, other;

	section("one descriptor, a START asleep on it, other ioctls go on");
	unit = gg_create(fd, G_GATE_UNIT_AUTO, 0, 0, 0);
	worker_start(&w, unit, fd);		/* shares fd */
	wait_refs(unit, 1);
	t0 = now_ms();
	other = gg_create(fd, G_GATE_UNIT_AUTO, 0, 0, 0);
	CHECK(now_ms() - t0 < 5000);	/* not asleep behind the START; loose for busy hosts */
	id = ctl_queue(other, BIO_READ, 0, 512, NULL);
	CHECK_EQ(gg_start(fd, other, buf, sizeof(buf), &io), 0);
	CHECK_EQ(gg_done(fd, &io, 0, buf), 0);
	CHECK_EQ(ctl_result(id, 1000), 0);
	/* And the sleeper still serves its own unit. */
	id = ctl_queue(unit, BIO_READ, 0, 512, NULL);
	CHECK_EQ(ctl_result(id, 2000), 0);
	/* Asleep again before the DESTROY, or its next START gets ENXIO. */
	wait_refs(unit, 1);
	CHECK_EQ(gg_destroy(fd, unit, 0), 0);
	worker_join(&w);
	CHECK_EQ(w.exit_error, ECANCELED);
	CHECK_EQ(w.served, 1);
	CHECK_EQ(gg_destroy(fd, other, 0), 0);
}

static void
test_load(int fd)
{
	struct load_result r;
	struct worker w[4];
	int unit;

	section("load generator");
	unit = gg_create(fd, G_GATE_UNIT_AUTO, 0, 0, 0);
	CHECK_EQ(ctl_load(unit, BIO_READ, 8, true, 4096, 100, 0, &r), 0);
	/* Nobody serves: all of it abandoned, nothing completed. */
	CHECK_EQ(r.completed, 0);
	CHECK_EQ(r.abandoned, 8);
	CHECK_EQ(unit_info(unit).nin, 8);
	CHECK_EQ(gg_destroy(fd, unit, 1), 0);	/* frees the abandoned load */

	unit = gg_create(fd, G_GATE_UNIT_AUTO, 0, 0, 0);
	for (int i = 0; i < 4; i++)
		worker_start(&w[i], unit, -1);
	CHECK_EQ(ctl_load(unit, BIO_READ, 16, true, 4096, 300, 5000, &r), 0);
	printf("ggate-selftest:   read 4k qd16: %" PRIu64 " ios, p50 %" PRIu64
	    " us, p99 %" PRIu64 " us\n", r.completed, r.p50_ns / 1000,
	    r.p99_ns / 1000);
	CHECK(r.completed > 0);
	CHECK_EQ(r.errors, 0);
	CHECK_EQ(r.abandoned, 0);
	CHECK_EQ(r.bytes, r.completed * 4096);
	CHECK(r.p50_ns <= r.p99_ns && r.p99_ns <= r.max_ns);
	CHECK(r.elapsed_ns >= 300000000ull);
	CHECK_EQ(ctl_load(unit, BIO_WRITE, 4, false, 65536, 200, 5000, &r),
	    0);
	CHECK(r.completed > 0);
	CHECK_EQ(r.errors, 0);
	CHECK_EQ(ctl_load(unit, BIO_FLUSH, 2, false, 0, 100, 5000, &r), 0);
	CHECK(r.completed > 0);
	CHECK_EQ(ctl_load(unit, BIO_READ, 1, false, 100, 100, 0, &r), EINVAL);
	CHECK_EQ(ctl_load(99, BIO_READ, 1, false, 512, 100, 0, &r), ENXIO);
	CHECK_EQ(unit_info(unit).queue_count, 0);
	wait_refs(unit, 4);		/* every worker back in START */
	CHECK_EQ(gg_destroy(fd, unit, 0), 0);
	for (int i = 0; i < 4; i++) {
		worker_join(&w[i]);
		CHECK_EQ(w[i].exit_error, ECANCELED);
	}
}

/*
 * The timeout guard.  It runs every `timeout` seconds and fails bios
 * older than 5 s (whole seconds of uptime), in and out of the queue.
 * Started first and checked last, so the other tests fill the wait.
 */
struct guard_test {
	int		unit;
	uint64_t	t0, taken, queued;
	struct g_gate_ctl_io io;
};

static void
guard_begin(int fd, struct guard_test *g)
{
	uint8_t buf[512];

	section("timeout guard: armed (checked at the end)");
	g->unit = gg_create(fd, 200, 0, 0, 1);	/* out of the others' way */
	CHECK_EQ(unit_info(g->unit).timeout, 1);
	g->t0 = now_ms();	/* before queueing: bounds the bios' age */
	g->taken = ctl_queue(g->unit, BIO_READ, 0, 512, NULL);
	g->queued = ctl_queue(g->unit, BIO_READ, 512, 512, NULL);
	CHECK_EQ(gg_start(fd, g->unit, buf, sizeof(buf), &g->io), 0);
	CHECK_EQ(g->io.gctl_seq, 1);
}

static void
guard_end(int fd, struct guard_test *g)
{
	uint8_t buf[512];
	uint64_t young, elapsed;

	section("timeout guard: requests older than 5 s fail with EIO");
	/* Under 4 s nothing can have expired, even by whole seconds. */
	elapsed = now_ms() - g->t0;
	if (elapsed < 3500)
		sleep_ms((unsigned)(3500 - elapsed));
	if (now_ms() - g->t0 < 3900) {
		CHECK(ctl_pending(g->taken));
		CHECK(ctl_pending(g->queued));
	} else {
		printf("ggate-selftest:   (slow run: early check skipped)\n");
	}
	young = ctl_queue(g->unit, BIO_READ, 1024, 512, NULL);
	CHECK_EQ(ctl_result(g->taken, 4000), EIO);
	CHECK_EQ(ctl_result(g->queued, 2000), EIO);
	elapsed = now_ms() - g->t0;
	CHECK(elapsed >= 4000 && elapsed < 15000);	/* upper bound loose for busy hosts */
	CHECK(ctl_pending(young));
	CHECK_EQ(unit_info(g->unit).nin, 1);
	CHECK_EQ(unit_info(g->unit).nout, 0);
	/* The daemon finally answers: the bio is gone, DONE ignores it. */
	CHECK_EQ(gg_done(fd, &g->io, 0, buf), 0);
	CHECK_EQ(gg_destroy(fd, g->unit, 1), 0);
	CHECK_EQ(ctl_result(young, 1000), ENXIO);
}

int
main(int argc, char *argv[])
{
	struct guard_test g;
	int fd;

	if (argc != 3) {
		fprintf(stderr, "usage: ggate-selftest ggate-kernel "
		    "libggate-emu.so\n");
		return (2);
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	load_library(argv[2]);
	start_server(argv[1]);

	test_paths();
	fd = gg_open();
	guard_begin(fd, &g);
	test_create(fd);
	test_missing_unit(fd);
	test_io(fd);
	test_readonly_and_limits(fd);
	test_modify(fd);
	test_cancel(fd);
	test_rescue(fd);
	test_destroy(fd);
	test_shared_fd(fd);
	test_load(fd);
	guard_end(fd, &g);
	CHECK_EQ(e_close(fd), 0);

	stop_server();
	printf("ggate-selftest: all checks passed\n");
	return (0);
}
