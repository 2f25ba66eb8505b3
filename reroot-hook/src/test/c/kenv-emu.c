/*
 * An emulator of FreeBSD's kenv(2) for Linux, after sys_kenv() in
 * sys/kern/kern_environment.c: the same return values and errors, an
 * in-process environment instead of the kernel's.  Loaded by the tests in
 * place of libc with -Dnbd.kenv.library.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define	KENV_GET	0
#define	KENV_SET	1
#define	KENV_UNSET	2
#define	KENV_DUMP	3
#define	KENV_MNAMELEN	128
#define	KENV_MVALLEN	128
#define	KENV_SIZE	512

static char *kenvp[KENV_SIZE + 1];

static int
find(const char *name)
{
	size_t len;
	int i;

	len = strlen(name);
	for (i = 0; kenvp[i] != NULL; i++)
		if (strncmp(kenvp[i], name, len) == 0 && kenvp[i][len] == '=')
			return (i);
	return (-1);
}

/* Test helper: forget every variable. */
void
kenv_emu_reset(void)
{
	int i;

	for (i = 0; kenvp[i] != NULL; i++) {
		free(kenvp[i]);
		kenvp[i] = NULL;
	}
}

int
kenv(int what, const char *name, char *value, int len)
{
	size_t done, needed, l;
	char *buf;
	int i;

	if (what == KENV_DUMP) {
		done = needed = 0;
		for (i = 0; kenvp[i] != NULL; i++) {
			l = strlen(kenvp[i]) + 1;
			needed += l;
			if (len > 0 && (size_t)len - done < l)
				l = (size_t)len - done;
			if (value != NULL && len > 0 && l > 0) {
				memcpy(value + done, kenvp[i], l);
				done += l;
			}
		}
		return (done == needed ? 0 : (int)needed);
	}
	if (name == NULL || strlen(name) > KENV_MNAMELEN) {
		errno = name == NULL ? EFAULT : ENAMETOOLONG;
		return (-1);
	}
	switch (what) {
	case KENV_GET:
		if ((i = find(name)) < 0) {
			errno = ENOENT;
			return (-1);
		}
		l = strlen(kenvp[i] + strlen(name) + 1) + 1;
		if (l > (size_t)len)
			l = len;
		memcpy(value, kenvp[i] + strlen(name) + 1, l);
		return ((int)l);
	case KENV_SET:
		if (len < 1) {
			errno = EINVAL;
			return (-1);
		}
		if (len > KENV_MVALLEN + 1)
			len = KENV_MVALLEN + 1;
		if (strnlen(value, len) == (size_t)len) {
			/* copyinstr(9) found no NUL within len bytes */
			errno = ENAMETOOLONG;
			return (-1);
		}
		if (asprintf(&buf, "%s=%s", name, value) < 0)
			return (-1);
		if ((i = find(name)) >= 0) {
			free(kenvp[i]);
			kenvp[i] = buf;
			return (0);
		}
		for (i = 0; kenvp[i] != NULL; i++)
			;
		if (i >= KENV_SIZE) {
			free(buf);
			return (0);	/* the kernel drops it silently */
		}
		kenvp[i] = buf;
		kenvp[i + 1] = NULL;
		return (0);
	case KENV_UNSET:
		if ((i = find(name)) < 0) {
			errno = ENOENT;
			return (-1);
		}
		free(kenvp[i]);
		for (; kenvp[i] != NULL; i++)
			kenvp[i] = kenvp[i + 1];
		return (0);
	default:
		errno = EINVAL;
		return (-1);
	}
}
