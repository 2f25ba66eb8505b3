/*
 * init for a temporary root that hands the machine over to a root filesystem
 * served by a userland daemon.
 *
 * As process 1 it runs /etc/rc, reaps orphans and waits.  On a reroot request
 * it kills every other process, mounts a tmpfs on /dev/reroot, runs the
 * optional hook /etc/rc.reroot (which starts the daemon from that tmpfs),
 * copies itself there and re-executes the copy with -r.  The copy switches
 * to the new root and executes its init.  On FreeBSD the kernel switches
 * roots (reboot(RB_REROOT), as init(8) does); on Linux this program mounts
 * the root named in /dev/reroot/root.conf and switches to it itself.
 *
 * Any failure is reported on the console and leads to an emergency shell;
 * process 1 never exits.
 */

#include <sys/types.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>
#ifdef __FreeBSD__
#include <sys/sysctl.h>
#include <sys/uio.h>
#include <kenv.h>
#endif
#ifdef __linux__
#include <sys/vfs.h>
#endif

#include <dirent.h>
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <paths.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#if !defined(__FreeBSD__) && !defined(__linux__)
#error "init: only FreeBSD and Linux are supported"
#endif

#define	PATH_RUNCOM		"/etc/rc"
#define	PATH_RC_REROOT		"/etc/rc.reroot"
#define	PATH_REROOT		"/dev/reroot"
#define	PATH_REROOT_INIT	"/dev/reroot/init"
#define	PATH_ROOT_CONF		"/dev/reroot/root.conf"
#define	PATH_ROOT_CONF_OLD	"/etc/reroot.conf"
#define	PATH_NEWROOT		"/newroot"

/* In seconds. */
#define	DEATH_WATCH	5	/* for SIGTERM, then SIGKILL */
#ifndef HOOK_TIMEOUT		/* the tests build one with a short timeout */
#define	HOOK_TIMEOUT	120	/* for /etc/rc.reroot to finish */
#endif
#define	ROOT_WAIT	3	/* default wait for the root device */
#define	SHELL_SPACING	2	/* between emergency shells */

#ifdef __FreeBSD__
#define	SIGREROOT	SIGEMT	/* what reboot -r sends */
#define	HOWTO_HALT	RB_HALT
#define	HOWTO_POWEROFF	(RB_HALT | RB_POWEROFF)
#else
#define	SIGREROOT	SIGHUP
#define	HOWTO_HALT	RB_HALT_SYSTEM
#define	HOWTO_POWEROFF	RB_POWER_OFF
#endif

enum request { R_NONE, R_REROOT, R_HALT, R_POWEROFF, R_REBOOT, R_SINGLE };
enum state { S_RUNCOM, S_IDLE, S_REROOT, S_DEATH, S_SHELL };

/*
 * Signals init acts on.  Linux follows BusyBox's halt, poweroff and reboot
 * (and the kernel's Ctrl-Alt-Del SIGINT); FreeBSD follows init(8).
 */
static const struct {
	int		 sig;
	enum request	 req;
	const char	*cmd;		/* "init cmd" sends sig */
} sigmap[] = {
	{ SIGREROOT,	R_REROOT,	"reroot" },
	{ SIGUSR1,	R_HALT,		"halt" },
	{ SIGUSR2,	R_POWEROFF,	"poweroff" },
#ifdef __FreeBSD__
	{ SIGINT,	R_REBOOT,	"reboot" },
	{ SIGTERM,	R_SINGLE,	"single" },
#else
	{ SIGTERM,	R_REBOOT,	"reboot" },
	{ SIGINT,	R_REBOOT,	NULL },
#endif
};
#define	NSIGMAP	(sizeof(sigmap) / sizeof(sigmap[0]))

/* Stop signals, and on FreeBSD the SIGHUP/SIGTSTP of init(8), mean nothing. */
static const int ignored[] = {
	SIGTSTP, SIGTTIN, SIGTTOU,
#ifdef __FreeBSD__
	SIGHUP,
#endif
};
#define	NIGNORED	(sizeof(ignored) / sizeof(ignored[0]))

static sigset_t waitset;		/* blocked; collected by sigtimedwait */
static enum request requested = R_NONE;
static char *argv0;

static void	emergency(const char *, ...)
		    __attribute__((format(printf, 1, 2)));
static enum state reroot_phase_two(void);

static void
emergency(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	dprintf(STDERR_FILENO, "init: ");
	vdprintf(STDERR_FILENO, fmt, ap);
	dprintf(STDERR_FILENO, "\n");
	va_end(ap);
}

static void
usage(void)
{

	fprintf(stderr, "usage: init [-r]\n"
#ifdef __FreeBSD__
	    "       init reroot | halt | poweroff | reboot | single\n");
#else
	    "       init reroot | halt | poweroff | reboot\n");
#endif
	exit(EX_USAGE);
}

static void
noop(int sig)
{

	(void)sig;
}

/*
 * Handlers are installed only so that no signal counts as ignored; all of
 * them stay blocked and wait_for() takes them with sigtimedwait().
 */
static void
setup_signals(void)
{
	struct sigaction sa;
	size_t i;

	memset(&sa, 0, sizeof(sa));
	sigfillset(&sa.sa_mask);
	sigemptyset(&waitset);
	sigaddset(&waitset, SIGCHLD);
	sa.sa_handler = noop;
	sa.sa_flags = SA_NOCLDSTOP;
	sigaction(SIGCHLD, &sa, NULL);
	sa.sa_flags = 0;
	for (i = 0; i < NSIGMAP; i++) {
		sigaddset(&waitset, sigmap[i].sig);
		sigaction(sigmap[i].sig, &sa, NULL);
	}
	sa.sa_handler = SIG_IGN;
	for (i = 0; i < NIGNORED; i++)
		sigaction(ignored[i], &sa, NULL);
	sigprocmask(SIG_SETMASK, &waitset, NULL);
}

/* Give a child, or the next init, the signal state it expects. */
static void
reset_signals(void)
{
	struct sigaction sa;
	sigset_t empty;
	size_t i;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	for (i = 0; i < NIGNORED; i++)
		sigaction(ignored[i], &sa, NULL);
	sigemptyset(&empty);
	sigprocmask(SIG_SETMASK, &empty, NULL);
}

static void
note_signal(int sig)
{
	size_t i;

	for (i = 0; i < NSIGMAP; i++)
		if (sigmap[i].sig == sig)
			requested = sigmap[i].req;
}

/*
 * Reap every child that has exited while waiting up to timeout seconds
 * (0: forever) for the child pid to exit.  Returns 1 when pid exited (its
 * status in *statusp), 0 on timeout, -1 when a request is pending.
 */
static int
wait_for(pid_t child, int *statusp, int timeout)
{
	struct timespec deadline, now, ts;
	siginfo_t info;
	pid_t pid;
	int found, sig, status;

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += timeout;
	found = 0;
	for (;;) {
		while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
			if (pid == child) {
				*statusp = status;
				found = 1;
			}
		if (found)
			return (1);
		if (requested != R_NONE)
			return (-1);
		if (timeout == 0)
			sig = sigwaitinfo(&waitset, &info);
		else {
			clock_gettime(CLOCK_MONOTONIC, &now);
			ts.tv_sec = deadline.tv_sec - now.tv_sec;
			ts.tv_nsec = deadline.tv_nsec - now.tv_nsec;
			if (ts.tv_nsec < 0) {
				ts.tv_sec--;
				ts.tv_nsec += 1000000000L;
			}
			if (ts.tv_sec < 0)
				return (0);
			sig = sigtimedwait(&waitset, &info, &ts);
		}
		if (sig > 0)
			note_signal(sig);
	}
}

static enum state
request_state(void)
{

	return (requested == R_REROOT ? S_REROOT : S_DEATH);
}

static int
report_status(const char *what, int status)
{

	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return (0);
	if (WIFEXITED(status))
		emergency("%s exited with status %d", what,
		    WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		emergency("%s was killed by signal %d (%s)", what,
		    WTERMSIG(status), strsignal(WTERMSIG(status)));
	return (-1);
}

/*
 * Run a script in its own process group but in our session, which has no
 * controlling terminal: not being a session leader, it cannot acquire the
 * console as one, so its exit cannot SIGHUP the daemon it leaves behind.
 */
static pid_t
spawn(char *const argv[])
{
	pid_t pid;

	if ((pid = fork()) == 0) {
		reset_signals();
		setpgid(0, 0);
		execv(argv[0], argv);
		emergency("cannot exec %s: %s", argv[0], strerror(errno));
		_exit(127);
	}
	if (pid == -1)
		emergency("cannot fork for %s: %s", argv[0], strerror(errno));
	return (pid);
}

/* Attach stdin, stdout and stderr to the console unless they are open. */
static void
open_console(void)
{
	int fd, i;

	for (i = 0; i < 3; i++)
		if (fcntl(i, F_GETFD) == -1)
			break;
	if (i == 3)
		return;
	/* O_NONBLOCK so that a serial line without carrier cannot hang us. */
	fd = open(_PATH_CONSOLE, O_RDWR | O_NOCTTY | O_NONBLOCK);
	if (fd == -1)
		fd = open(_PATH_DEVNULL, O_RDWR);
	if (fd == -1)
		return;
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	for (i = 0; i < 3; i++)
		if (fcntl(i, F_GETFD) == -1)
			dup2(fd, i);
	if (fd > 2)
		close(fd);
}

#ifdef __linux__
/* Whether path is the root of a filesystem other than the one of "/". */
static int
is_mounted(const char *path)
{
	struct stat root, sb;

	return (stat("/", &root) == 0 && stat(path, &sb) == 0 &&
	    sb.st_dev != root.st_dev);
}

static void
mount_kernel_fs(void)
{
	static const struct {
		const char *path, *type;
	} fs[] = {
		{ "/dev", "devtmpfs" },
		{ "/proc", "proc" },
		{ "/sys", "sysfs" },
	};
	size_t i;

	for (i = 0; i < sizeof(fs) / sizeof(fs[0]); i++) {
		if (is_mounted(fs[i].path))
			continue;
		if (mount(fs[i].type, fs[i].path, fs[i].type, MS_NOSUID,
		    NULL) == -1)
			emergency("cannot mount %s on %s: %s", fs[i].type,
			    fs[i].path, strerror(errno));
		if (i == 0)
			open_console();
	}
}
#endif

static void
kill_all(void)
{
	static const int sigs[2] = { SIGTERM, SIGKILL };
	struct timespec tick = { 0, 50 * 1000 * 1000 };
	pid_t pid;
	int i, n;

	for (i = 0; i < 2; i++) {
		if (kill(-1, sigs[i]) == -1 && errno == ESRCH)
			return;
		for (n = 0; n < DEATH_WATCH * 20; n++) {
			while ((pid = waitpid(-1, NULL, WNOHANG)) > 0)
				continue;
			if (pid == -1 && errno == ECHILD)
				return;
			nanosleep(&tick, NULL);
		}
	}
	emergency("some processes would not die; going on");
}

/*
 * Run the emergency shell on the console until a request arrives,
 * restarting it when it exits.
 */
static enum state
single_user(void)
{
	time_t started;
	pid_t pid;
	int status;

	emergency("starting an emergency shell (%s); \"init reroot\" retries "
	    "the reroot", _PATH_BSHELL);
	started = time(NULL);
	if ((pid = fork()) == 0) {
		reset_signals();
		setsid();
		ioctl(STDIN_FILENO, TIOCSCTTY, 0);
		execl(_PATH_BSHELL, "-sh", "-i", (char *)NULL);
		emergency("cannot exec %s: %s", _PATH_BSHELL, strerror(errno));
		_exit(127);
	}
	if (pid == -1)
		emergency("cannot fork for the emergency shell: %s",
		    strerror(errno));
	else {
		if (wait_for(pid, &status, 0) < 0)
			return (request_state());
		if (report_status("emergency shell", status) == 0)
			emergency("emergency shell exited");
	}
	if (time(NULL) - started < SHELL_SPACING &&
	    wait_for(0, NULL, SHELL_SPACING) < 0)
		return (request_state());
	return (S_SHELL);
}

static enum state
runcom(void)
{
	char *argv[] = { _PATH_BSHELL, PATH_RUNCOM, "autoboot", NULL };
	pid_t pid;
	int status;

	if (access(PATH_RUNCOM, R_OK) == -1) {
		emergency("cannot read %s: %s", PATH_RUNCOM, strerror(errno));
		return (S_SHELL);
	}
	if ((pid = spawn(argv)) == -1)
		return (S_SHELL);
	if (wait_for(pid, &status, 0) < 0)
		return (request_state());
	if (report_status(PATH_RUNCOM, status) != 0)
		return (S_SHELL);
	return (S_IDLE);
}

static enum state
idle(void)
{

	wait_for(0, NULL, 0);
	return (request_state());
}

/* Halt, power off, reboot, or (FreeBSD's SIGTERM) go to single user. */
static enum state
death(void)
{
	enum request req;
	int howto;

	req = requested;
	requested = R_NONE;
	kill_all();
	if (req == R_SINGLE)
		return (S_SHELL);
	howto = req == R_HALT ? HOWTO_HALT :
	    req == R_POWEROFF ? HOWTO_POWEROFF : RB_AUTOBOOT;
	sync();
	reboot(howto);
	emergency("reboot(%#x) failed: %s", howto, strerror(errno));
	return (S_SHELL);
}

static int
read_self(void **bufp, size_t *lenp)
{
	struct stat sb;
	const char *path;
	ssize_t n;
	size_t len;
	char *buf;
	int fd;

	path = argv0;
#ifdef __linux__
	/* argv[0] need not be a path; /proc/self/exe is the file itself. */
	if (access("/proc/self/exe", R_OK) == 0)
		path = "/proc/self/exe";
#endif
	if ((fd = open(path, O_RDONLY)) == -1 || fstat(fd, &sb) == -1) {
		emergency("cannot open my own executable %s: %s", path,
		    strerror(errno));
		if (fd != -1)
			close(fd);
		return (-1);
	}
	if ((buf = malloc(sb.st_size)) == NULL) {
		emergency("cannot allocate %jd bytes to copy %s",
		    (intmax_t)sb.st_size, path);
		close(fd);
		return (-1);
	}
	for (len = 0; len < (size_t)sb.st_size; len += n)
		if ((n = read(fd, buf + len, sb.st_size - len)) <= 0) {
			emergency("cannot read %s: %s", path,
			    n == 0 ? "file shrank" : strerror(errno));
			free(buf);
			close(fd);
			return (-1);
		}
	close(fd);
	*bufp = buf;
	*lenp = len;
	return (0);
}

static int
write_file(const char *path, const char *buf, size_t len)
{
	ssize_t n;
	size_t done;
	int fd;

	/* The hook may have left a file here: ours must win. */
	unlink(path);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0700)) == -1) {
		emergency("cannot create %s: %s", path, strerror(errno));
		return (-1);
	}
	for (done = 0; done < len; done += n)
		if ((n = write(fd, buf + done, len - done)) <= 0) {
			emergency("cannot write %s: %s", path,
			    n == 0 ? "nothing written" : strerror(errno));
			close(fd);
			return (-1);
		}
	if (close(fd) == -1) {
		emergency("cannot close %s: %s", path, strerror(errno));
		return (-1);
	}
	return (0);
}

static int
mount_tmpfs(const char *path)
{
#ifdef __FreeBSD__
	struct iovec iov[6];
	char errmsg[255];

	/*
	 * A tmpfs an earlier, failed attempt left (its daemons died in
	 * kill_all): unmounted, not buried under a new one with what it holds.
	 */
	while (unmount(path, 0) == 0)
		;
	memset(errmsg, 0, sizeof(errmsg));
	iov[0].iov_base = "fstype";
	iov[0].iov_len = sizeof("fstype");
	iov[1].iov_base = "tmpfs";
	iov[1].iov_len = sizeof("tmpfs");
	iov[2].iov_base = "fspath";
	iov[2].iov_len = sizeof("fspath");
	iov[3].iov_base = (char *)path;
	iov[3].iov_len = strlen(path) + 1;
	iov[4].iov_base = "errmsg";
	iov[4].iov_len = sizeof("errmsg");
	iov[5].iov_base = errmsg;
	iov[5].iov_len = sizeof(errmsg);
	if (nmount(iov, 6, 0) == -1) {
		emergency("cannot mount tmpfs on %s: %s%s%s", path,
		    strerror(errno), *errmsg != '\0' ? ": " : "", errmsg);
		return (-1);
	}
#else
	if (mkdir(path, 0700) == -1 && errno != EEXIST) {
		emergency("cannot create %s: %s", path, strerror(errno));
		return (-1);
	}
	/*
	 * As above.  Detached: after a failed second phase this very process
	 * runs from the init copy in it.
	 */
	while (umount2(path, MNT_DETACH) == 0)
		;
	if (mount("tmpfs", path, "tmpfs", MS_NOSUID, "mode=0700") == -1) {
		emergency("cannot mount tmpfs on %s: %s", path,
		    strerror(errno));
		return (-1);
	}
#endif
	return (0);
}

/*
 * Run /etc/rc.reroot if it exists: directly when it is executable, with
 * the shell otherwise, as init(8) runs its scripts.  Returns 0 when it is
 * absent or succeeded, -1 on failure, 1 when a request other than reroot
 * arrived while it ran.
 */
static int
run_hook(void)
{
	char *direct[] = { PATH_RC_REROOT, NULL };
	char *viash[] = { _PATH_BSHELL, PATH_RC_REROOT, NULL };
	struct stat sb;
	pid_t pid;
	int r, status;

	if (stat(PATH_RC_REROOT, &sb) == -1) {
		if (errno != ENOENT) {
			emergency("cannot stat %s: %s", PATH_RC_REROOT,
			    strerror(errno));
			return (-1);
		}
		emergency("no %s; rerooting without a hook", PATH_RC_REROOT);
		return (0);
	}
	pid = spawn(access(PATH_RC_REROOT, X_OK) == 0 ? direct : viash);
	if (pid == -1)
		return (-1);
	while ((r = wait_for(pid, &status, HOOK_TIMEOUT)) < 0) {
		if (requested != R_REROOT)
			return (1);
		requested = R_NONE;
	}
	if (r == 0) {
		emergency("%s did not finish within %d seconds; killing it",
		    PATH_RC_REROOT, HOOK_TIMEOUT);
		/*
		 * Its whole process group (spawn gives it one): a child left
		 * running could still start daemons or name a root while the
		 * emergency shell is up.
		 */
		kill(-pid, SIGKILL);
		if (wait_for(pid, &status, DEATH_WATCH) == 0)
			emergency("%s survived SIGKILL", PATH_RC_REROOT);
		return (-1);
	}
	return (report_status(PATH_RC_REROOT, status));
}

static enum state
reroot(void)
{
	void *buf;
	size_t len;
	int r;

	buf = NULL;
	requested = R_NONE;
	if (read_self(&buf, &len) != 0)
		goto fail;
	kill_all();
	if (mount_tmpfs(PATH_REROOT) != 0)
		goto fail;
	if ((r = run_hook()) > 0) {
		free(buf);
		return (request_state());
	}
	if (r < 0 || write_file(PATH_REROOT_INIT, buf, len) != 0)
		goto fail;
	free(buf);
	execl(PATH_REROOT_INIT, PATH_REROOT_INIT, "-r", (char *)NULL);
	emergency("cannot exec %s: %s", PATH_REROOT_INIT, strerror(errno));
	return (S_SHELL);
fail:
	emergency("reroot failed");
	free(buf);
	return (S_SHELL);
}

/* Execute the first init of a colon separated list that runs. */
static void
exec_init(char *list)
{
	char *copy, *path, *rest;
	int error;

	if ((copy = strdup(list)) == NULL)
		copy = list;
	reset_signals();
	error = ENOENT;
	for (rest = copy; (path = strsep(&rest, ":")) != NULL;) {
		if (*path == '\0')
			continue;
		execl(path, path, (char *)NULL);
		error = errno;
	}
	setup_signals();
	emergency("cannot exec init from %s: %s", list, strerror(error));
}

#ifdef __FreeBSD__
static enum state
reroot_phase_two(void)
{
	char init_path[PATH_MAX];
	size_t len;

	/* The kernel mounts vfs.root.mountfrom and keeps devfs and us. */
	if (reboot(RB_REROOT) == -1) {
		emergency("reboot(RB_REROOT) failed: %s", strerror(errno));
		return (S_SHELL);
	}
	if (kenv(KENV_GET, "init_path", init_path, sizeof(init_path)) <= 0) {
		len = sizeof(init_path);
		if (sysctlbyname("kern.init_path", init_path, &len, NULL,
		    0) == -1) {
			emergency("cannot read kern.init_path: %s",
			    strerror(errno));
			return (S_SHELL);
		}
	}
	exec_init(init_path);
	return (S_SHELL);
}
#else /* __linux__ */
/*
 * Linux: the root to switch to, from PATH_ROOT_CONF (written by the hook)
 * or else PATH_ROOT_CONF_OLD on the temporary root.  Lines are KEY=value,
 * blank or starting with '#'; see README.md.
 */
struct rootconf {
	char	root[PATH_MAX];		/* ROOT: device or source */
	char	fstype[64];		/* FSTYPE */
	char	flags[1024];		/* FLAGS: mount options */
	char	init[PATH_MAX];		/* INIT: colon separated */
	int	wait;			/* ROOTWAIT: seconds */
};

static const struct {
	const char	*name;
	unsigned long	 set, clear;
} mntopts[] = {
	{ "ro", MS_RDONLY, 0 },		{ "rw", 0, MS_RDONLY },
	{ "nosuid", MS_NOSUID, 0 },	{ "suid", 0, MS_NOSUID },
	{ "nodev", MS_NODEV, 0 },	{ "dev", 0, MS_NODEV },
	{ "noexec", MS_NOEXEC, 0 },	{ "exec", 0, MS_NOEXEC },
	{ "noatime", MS_NOATIME, 0 },	{ "nodiratime", MS_NODIRATIME, 0 },
	{ "relatime", MS_RELATIME, 0 },	{ "sync", MS_SYNCHRONOUS, 0 },
	{ "bind", MS_BIND, 0 },
};

static int
conf_set(char *dst, size_t size, const char *val, const char *path, int line)
{

	if (snprintf(dst, size, "%s", val) >= (int)size) {
		emergency("%s:%d: value longer than %zu bytes", path, line,
		    size - 1);
		return (-1);
	}
	return (0);
}

static int
read_conf(const char *path, struct rootconf *rc)
{
	char buf[PATH_MAX + 16], *key, *val, *end;
	FILE *fp;
	int error, line;

	if ((fp = fopen(path, "r")) == NULL)
		return (-1);
	memset(rc, 0, sizeof(*rc));
	strcpy(rc->init, "/sbin/init");
	rc->wait = ROOT_WAIT;
	error = 0;
	for (line = 1; error == 0 && fgets(buf, sizeof(buf), fp) != NULL;
	    line++) {
		if (strchr(buf, '\n') == NULL && !feof(fp)) {
			emergency("%s:%d: line too long", path, line);
			error = -1;
			break;
		}
		end = buf + strlen(buf);
		while (end > buf && strchr(" \t\r\n", end[-1]) != NULL)
			*--end = '\0';
		for (key = buf; *key == ' ' || *key == '\t'; key++)
			continue;
		if (*key == '\0' || *key == '#')
			continue;
		if ((val = strchr(key, '=')) == NULL) {
			emergency("%s:%d: expected KEY=value, found \"%s\"",
			    path, line, key);
			error = -1;
			break;
		}
		*val++ = '\0';
		if (strcmp(key, "ROOT") == 0)
			error = conf_set(rc->root, sizeof(rc->root), val, path,
			    line);
		else if (strcmp(key, "FSTYPE") == 0)
			error = conf_set(rc->fstype, sizeof(rc->fstype), val,
			    path, line);
		else if (strcmp(key, "FLAGS") == 0)
			error = conf_set(rc->flags, sizeof(rc->flags), val,
			    path, line);
		else if (strcmp(key, "INIT") == 0)
			error = conf_set(rc->init, sizeof(rc->init), val, path,
			    line);
		else if (strcmp(key, "ROOTWAIT") == 0) {
			rc->wait = (int)strtol(val, &end, 10);
			if (*val == '\0' || *end != '\0' || rc->wait < 0 ||
			    rc->wait > 3600) {
				emergency("%s:%d: ROOTWAIT must be 0 to 3600 "
				    "seconds, found \"%s\"", path, line, val);
				error = -1;
			}
		} else {
			emergency("%s:%d: unknown key \"%s\" (expected ROOT, "
			    "FSTYPE, FLAGS, INIT or ROOTWAIT)", path, line,
			    key);
			error = -1;
		}
	}
	fclose(fp);
	if (error == 0 && (rc->root[0] == '\0' || rc->fstype[0] == '\0')) {
		emergency("%s: ROOT= and FSTYPE= are required", path);
		error = -1;
	}
	return (error == 0 ? 0 : -2);
}

/* Split FLAGS into mount(2) flags and the filesystem's own options. */
static int
parse_flags(char *flags, unsigned long *mflagsp, char *data, size_t size)
{
	char *opt;
	size_t i, len;

	*mflagsp = 0;
	data[0] = '\0';
	while ((opt = strsep(&flags, ",")) != NULL) {
		if (*opt == '\0')
			continue;
		for (i = 0; i < sizeof(mntopts) / sizeof(mntopts[0]); i++)
			if (strcmp(opt, mntopts[i].name) == 0)
				break;
		if (i < sizeof(mntopts) / sizeof(mntopts[0])) {
			*mflagsp = (*mflagsp & ~mntopts[i].clear) |
			    mntopts[i].set;
			continue;
		}
		len = strlen(data);
		if (snprintf(data + len, size - len, "%s%s",
		    len > 0 ? "," : "", opt) >= (int)(size - len))
			return (-1);
	}
	return (0);
}

static int
mount_root(struct rootconf *rc)
{
	struct timespec tick = { 0, 250 * 1000 * 1000 };
	unsigned long mflags;
	char data[sizeof(rc->flags)];
	int tries;

	if (parse_flags(rc->flags, &mflags, data, sizeof(data)) != 0) {
		emergency("FLAGS too long");
		return (-1);
	}
	if (mkdir(PATH_NEWROOT, 0755) == -1 && errno != EEXIST) {
		emergency("cannot create %s: %s", PATH_NEWROOT,
		    strerror(errno));
		return (-1);
	}
	/* Like rootwait: the device may need a moment to appear. */
	for (tries = rc->wait * 4; mount(rc->root, PATH_NEWROOT, rc->fstype,
	    mflags, data) == -1; tries--) {
		if (tries <= 0) {
			emergency("cannot mount %s on %s (type %s, options "
			    "\"%s\"): %s", rc->root, PATH_NEWROOT, rc->fstype,
			    data, strerror(errno));
			return (-1);
		}
		nanosleep(&tick, NULL);
	}
	return (0);
}

/* Whether one init of the colon separated list is executable below root. */
static int
init_exists(const char *root, const char *list)
{
	char path[PATH_MAX], *copy, *entry, *rest;
	int found;

	if ((copy = strdup(list)) == NULL)
		return (1);
	found = 0;
	for (rest = copy; !found && (entry = strsep(&rest, ":")) != NULL;)
		found = *entry != '\0' && snprintf(path, sizeof(path), "%s%s",
		    root, entry) < (int)sizeof(path) &&
		    access(path, X_OK) == 0;
	free(copy);
	return (found);
}

/* Delete what can be deleted of the old root's tree, as switch_root does. */
static void
remove_tree(int fd, dev_t dev)
{
	struct dirent *de;
	struct stat sb;
	DIR *dir;
	int sub;

	if ((dir = fdopendir(fd)) == NULL) {
		close(fd);
		return;
	}
	while ((de = readdir(dir)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		/* Mount points show another device: leave them alone. */
		if (fstatat(dirfd(dir), de->d_name, &sb,
		    AT_SYMLINK_NOFOLLOW) == -1 || sb.st_dev != dev)
			continue;
		if (S_ISDIR(sb.st_mode)) {
			sub = openat(dirfd(dir), de->d_name,
			    O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
			if (sub != -1)
				remove_tree(sub, dev);
			unlinkat(dirfd(dir), de->d_name, AT_REMOVEDIR);
		} else
			unlinkat(dirfd(dir), de->d_name, 0);
	}
	closedir(dir);
}

static void
free_old_root(void)
{
	struct statfs sfs;
	struct stat sb;
	int fd;

	/* Only an initramfs (ramfs or tmpfs) holds memory worth freeing. */
	if (statfs("/", &sfs) == -1 || (sfs.f_type != 0x858458f6 &&
	    sfs.f_type != 0x01021994) || stat("/", &sb) == -1)
		return;
	if ((fd = open("/", O_RDONLY | O_DIRECTORY)) != -1)
		remove_tree(fd, sb.st_dev);
}

static enum state
reroot_phase_two(void)
{
	static const char *const moved[] = { "/proc", "/sys", "/run" };
	struct rootconf rc;
	char path[PATH_MAX];
	const char *conf, *dev;
	size_t i;
	int r;

	conf = PATH_ROOT_CONF;
	if ((r = read_conf(conf, &rc)) == -1 && errno == ENOENT) {
		conf = PATH_ROOT_CONF_OLD;
		r = read_conf(conf, &rc);
	}
	if (r == -1 && errno == ENOENT)
		emergency("neither %s nor %s exists: the hook must write one",
		    PATH_ROOT_CONF, PATH_ROOT_CONF_OLD);
	else if (r == -1)
		emergency("cannot read %s: %s", conf, strerror(errno));
	if (r != 0 || mount_root(&rc) != 0)
		goto fail;
	if (!init_exists(PATH_NEWROOT, rc.init)) {
		emergency("no executable init (%s) on %s from %s", rc.init,
		    rc.root, conf);
		goto unmount;
	}

	/* /dev carries /dev/reroot, where we and the daemon live. */
	dev = is_mounted("/dev") ? "/dev" : PATH_REROOT;
	snprintf(path, sizeof(path), "%s%s", PATH_NEWROOT, dev);
	if (mount(dev, path, NULL, MS_MOVE, NULL) == -1) {
		emergency("cannot move %s to %s: %s", dev, path,
		    strerror(errno));
		goto unmount;
	}
	for (i = 0; i < sizeof(moved) / sizeof(moved[0]); i++) {
		if (!is_mounted(moved[i]))
			continue;
		snprintf(path, sizeof(path), "%s%s", PATH_NEWROOT, moved[i]);
		if (mount(moved[i], path, NULL, MS_MOVE, NULL) == -1)
			emergency("cannot move %s to %s: %s; leaving it",
			    moved[i], path, strerror(errno));
	}
	free_old_root();
	if (chdir(PATH_NEWROOT) == -1 ||
	    mount(".", "/", NULL, MS_MOVE, NULL) == -1 ||
	    chroot(".") == -1 || chdir("/") == -1) {
		emergency("cannot switch to the new root %s: %s", rc.root,
		    strerror(errno));
		goto fail;
	}
	exec_init(rc.init);
	return (S_SHELL);
unmount:
	if (umount(PATH_NEWROOT) == -1)
		emergency("cannot unmount %s: %s", PATH_NEWROOT,
		    strerror(errno));
fail:
	emergency("reroot failed");
	return (S_SHELL);
}
#endif

static void
transition(enum state s)
{

	for (;;) {
		/* A pending request preempts whatever comes next. */
		if (requested != R_NONE && s != S_REROOT && s != S_DEATH)
			s = request_state();
		switch (s) {
		case S_RUNCOM:
			s = runcom();
			break;
		case S_IDLE:
			s = idle();
			break;
		case S_REROOT:
			s = reroot();
			break;
		case S_DEATH:
			s = death();
			break;
		case S_SHELL:
			s = single_user();
			break;
		}
	}
}

/* Not process 1: ask process 1 to act. */
static int
command(int argc, char *argv[])
{
	size_t i;

	if (argc != 2)
		usage();
	for (i = 0; i < NSIGMAP; i++)
		if (sigmap[i].cmd != NULL &&
		    strcmp(argv[1], sigmap[i].cmd) == 0) {
			if (kill(1, sigmap[i].sig) == -1)
				err(EX_NOPERM, "cannot signal process 1");
			return (EX_OK);
		}
	usage();
	return (EX_USAGE);
}

int
main(int argc, char *argv[])
{
	int c, phase2;

	if (getpid() != 1)
		return (command(argc, argv));
	argv0 = argv[0];
	phase2 = 0;
	/* The kernel passes on arguments it does not know: ignore them. */
	opterr = 0;
	while ((c = getopt(argc, argv, "r")) != -1)
		if (c == 'r')
			phase2 = 1;

	setup_signals();
	open_console();
	setenv("PATH", _PATH_STDPATH, 0);
	if (phase2)
		transition(reroot_phase_two());
#ifdef __linux__
	mount_kernel_fs();
	/* Ctrl-Alt-Del sends us SIGINT instead of resetting the machine. */
	reboot(RB_DISABLE_CAD);
#endif
	transition(S_RUNCOM);
	return (1);
}
