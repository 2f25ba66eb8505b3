/*
 * FreeBSD's GEOM Gate control interface (sys/geom/gate/g_gate.h,
 * G_GATE_VERSION 3) as FreeBSD LP64 (amd64, arm64) lays it out, spelled
 * with fixed-width types so that a Linux LP64 compiler lays it out the
 * same way.  Every offset and size below is asserted, so a mistake here
 * breaks the build instead of silently corrupting a struct.
 *
 * Nothing in here is Linux's: the ioctl numbers use FreeBSD's
 * <sys/ioccom.h> encoding and the BIO_* commands are FreeBSD's
 * <sys/bio.h> values.  Errno values are NOT defined here: the emulator
 * answers with the host's <errno.h>, as the Java side maps errno through
 * jnr-constants for the running platform.
 */
#ifndef GGATE_ABI_H
#define GGATE_ABI_H

#include <stddef.h>
#include <stdint.h>

_Static_assert(sizeof(void *) == 8 && sizeof(long) == 8,
    "the emulated ABI is FreeBSD LP64: build on an LP64 host");

/* FreeBSD's own types, as LP64 sizes them. */
typedef unsigned int	fb_u_int;	/* u_int */
typedef int64_t		fb_off_t;	/* off_t */
typedef uint64_t	fb_uintptr_t;	/* uintptr_t */

#define	FB_NAME_MAX		255	/* <sys/syslimits.h> */

/* <sys/ioccom.h> */
#define	FB_IOCPARM_SHIFT	13
#define	FB_IOCPARM_MASK		((1 << FB_IOCPARM_SHIFT) - 1)
#define	FB_IOCPARM_LEN(x)	(((x) >> 16) & FB_IOCPARM_MASK)
#define	FB_IOCPARM_MAX		(1 << FB_IOCPARM_SHIFT)
#define	FB_IOC_VOID		0x20000000UL
#define	FB_IOC_OUT		0x40000000UL
#define	FB_IOC_IN		0x80000000UL
#define	FB_IOC_INOUT		(FB_IOC_IN | FB_IOC_OUT)
#define	FB_IOC_DIRMASK		(FB_IOC_VOID | FB_IOC_OUT | FB_IOC_IN)
#define	FB_IOC(inout, group, num, len)					\
	((unsigned long)((inout) | (((len) & FB_IOCPARM_MASK) << 16) |	\
	    ((group) << 8) | (num)))
#define	FB_IOWR(g, n, t)	FB_IOC(FB_IOC_INOUT, (g), (n), sizeof(t))

/* <sys/bio.h>: bio_cmd values. */
#define	BIO_READ		0x01
#define	BIO_WRITE		0x02
#define	BIO_DELETE		0x03
#define	BIO_GETATTR		0x04
#define	BIO_FLUSH		0x05
#define	BIO_SPEEDUP		0x0a	/* queued to userland by 14 and later */

/* <geom/gate/g_gate.h> */
#define	G_GATE_CLASS_NAME	"GATE"
#define	G_GATE_PROVIDER_NAME	"ggate"
#define	G_GATE_CTL_NAME		"ggctl"
#define	G_GATE_CTL_PATH		"/dev/" G_GATE_CTL_NAME

#define	G_GATE_VERSION		3
#define	G_GATE_MAX_QUEUE_SIZE	4096

#define	G_GATE_FLAG_READONLY	0x0001
#define	G_GATE_FLAG_WRITEONLY	0x0002
#define	G_GATE_FLAG_DESTROY	0x1000
#define	G_GATE_USERFLAGS	(G_GATE_FLAG_READONLY | G_GATE_FLAG_WRITEONLY)

#define	G_GATE_UNIT_AUTO	(-1)
#define	G_GATE_NAME_GIVEN	(-2)

#define	G_GATE_INFOSIZE		2048

#define	GG_MODIFY_MEDIASIZE	0x01
#define	GG_MODIFY_INFO		0x02
#define	GG_MODIFY_READPROV	0x04
#define	GG_MODIFY_READOFFSET	0x08

/* g_gate.c: kern.geom.gate.maxunits, a boot-time tunable. */
#define	G_GATE_MAXUNITS		256

struct g_gate_ctl_create {
	fb_u_int	gctl_version;
	fb_off_t	gctl_mediasize;
	fb_u_int	gctl_sectorsize;
	fb_u_int	gctl_flags;
	fb_u_int	gctl_maxcount;
	fb_u_int	gctl_timeout;
	char		gctl_name[FB_NAME_MAX];
	char		gctl_info[G_GATE_INFOSIZE];
	char		gctl_readprov[FB_NAME_MAX];
	fb_off_t	gctl_readoffset;
	int		gctl_unit;	/* in/out */
};

struct g_gate_ctl_modify {
	fb_u_int	gctl_version;
	int		gctl_unit;
	uint32_t	gctl_modify;
	fb_off_t	gctl_mediasize;
	char		gctl_info[G_GATE_INFOSIZE];
	char		gctl_readprov[FB_NAME_MAX];
	fb_off_t	gctl_readoffset;
};

struct g_gate_ctl_destroy {
	fb_u_int	gctl_version;
	int		gctl_unit;
	int		gctl_force;
	char		gctl_name[FB_NAME_MAX];
};

struct g_gate_ctl_cancel {
	fb_u_int	gctl_version;
	int		gctl_unit;
	fb_uintptr_t	gctl_seq;
	char		gctl_name[FB_NAME_MAX];
};

struct g_gate_ctl_io {
	fb_u_int	gctl_version;
	int		gctl_unit;
	fb_uintptr_t	gctl_seq;
	fb_u_int	gctl_cmd;
	fb_off_t	gctl_offset;
	fb_off_t	gctl_length;
	uint64_t	gctl_data;	/* void *: a user address, kept as a number */
	int		gctl_error;
};

#define	G_GATE_CMD_CREATE	FB_IOWR('m', 0, struct g_gate_ctl_create)
#define	G_GATE_CMD_MODIFY	FB_IOWR('m', 1, struct g_gate_ctl_modify)
#define	G_GATE_CMD_DESTROY	FB_IOWR('m', 2, struct g_gate_ctl_destroy)
#define	G_GATE_CMD_CANCEL	FB_IOWR('m', 3, struct g_gate_ctl_cancel)
#define	G_GATE_CMD_START	FB_IOWR('m', 4, struct g_gate_ctl_io)
#define	G_GATE_CMD_DONE		FB_IOWR('m', 5, struct g_gate_ctl_io)

/*
 * The layout facts (shared/freebsd/ggate-abi.md), checked against the
 * structs above: a field in the wrong place fails the build.
 */
#define	GG_ASSERT_AT(type, field, off)					\
	_Static_assert(offsetof(struct type, field) == (off),		\
	    #type "." #field " must be at offset " #off)
#define	GG_ASSERT_SIZE(type, size)					\
	_Static_assert(sizeof(struct type) == (size),			\
	    "sizeof(struct " #type ") must be " #size)

GG_ASSERT_SIZE(g_gate_ctl_create, 2608);
_Static_assert(_Alignof(struct g_gate_ctl_create) == 8,
    "g_gate_ctl_create is 8-byte aligned (off_t)");
GG_ASSERT_AT(g_gate_ctl_create, gctl_version, 0);
GG_ASSERT_AT(g_gate_ctl_create, gctl_mediasize, 8);
GG_ASSERT_AT(g_gate_ctl_create, gctl_sectorsize, 16);
GG_ASSERT_AT(g_gate_ctl_create, gctl_flags, 20);
GG_ASSERT_AT(g_gate_ctl_create, gctl_maxcount, 24);
GG_ASSERT_AT(g_gate_ctl_create, gctl_timeout, 28);
GG_ASSERT_AT(g_gate_ctl_create, gctl_name, 32);
GG_ASSERT_AT(g_gate_ctl_create, gctl_info, 287);
GG_ASSERT_AT(g_gate_ctl_create, gctl_readprov, 2335);
GG_ASSERT_AT(g_gate_ctl_create, gctl_readoffset, 2592);
GG_ASSERT_AT(g_gate_ctl_create, gctl_unit, 2600);

GG_ASSERT_SIZE(g_gate_ctl_modify, 2336);
GG_ASSERT_AT(g_gate_ctl_modify, gctl_version, 0);
GG_ASSERT_AT(g_gate_ctl_modify, gctl_unit, 4);
GG_ASSERT_AT(g_gate_ctl_modify, gctl_modify, 8);
GG_ASSERT_AT(g_gate_ctl_modify, gctl_mediasize, 16);
GG_ASSERT_AT(g_gate_ctl_modify, gctl_info, 24);
GG_ASSERT_AT(g_gate_ctl_modify, gctl_readprov, 2072);
GG_ASSERT_AT(g_gate_ctl_modify, gctl_readoffset, 2328);

GG_ASSERT_SIZE(g_gate_ctl_destroy, 268);
GG_ASSERT_AT(g_gate_ctl_destroy, gctl_version, 0);
GG_ASSERT_AT(g_gate_ctl_destroy, gctl_unit, 4);
GG_ASSERT_AT(g_gate_ctl_destroy, gctl_force, 8);
GG_ASSERT_AT(g_gate_ctl_destroy, gctl_name, 12);

GG_ASSERT_SIZE(g_gate_ctl_cancel, 272);
GG_ASSERT_AT(g_gate_ctl_cancel, gctl_version, 0);
GG_ASSERT_AT(g_gate_ctl_cancel, gctl_unit, 4);
GG_ASSERT_AT(g_gate_ctl_cancel, gctl_seq, 8);
GG_ASSERT_AT(g_gate_ctl_cancel, gctl_name, 16);

GG_ASSERT_SIZE(g_gate_ctl_io, 56);
GG_ASSERT_AT(g_gate_ctl_io, gctl_version, 0);
GG_ASSERT_AT(g_gate_ctl_io, gctl_unit, 4);
GG_ASSERT_AT(g_gate_ctl_io, gctl_seq, 8);
GG_ASSERT_AT(g_gate_ctl_io, gctl_cmd, 16);
GG_ASSERT_AT(g_gate_ctl_io, gctl_offset, 24);
GG_ASSERT_AT(g_gate_ctl_io, gctl_length, 32);
GG_ASSERT_AT(g_gate_ctl_io, gctl_data, 40);
GG_ASSERT_AT(g_gate_ctl_io, gctl_error, 48);

_Static_assert(G_GATE_CMD_CREATE == 0xCA306D00UL, "G_GATE_CMD_CREATE");
_Static_assert(G_GATE_CMD_MODIFY == 0xC9206D01UL, "G_GATE_CMD_MODIFY");
_Static_assert(G_GATE_CMD_DESTROY == 0xC10C6D02UL, "G_GATE_CMD_DESTROY");
_Static_assert(G_GATE_CMD_CANCEL == 0xC1106D03UL, "G_GATE_CMD_CANCEL");
_Static_assert(G_GATE_CMD_START == 0xC0386D04UL, "G_GATE_CMD_START");
_Static_assert(G_GATE_CMD_DONE == 0xC0386D05UL, "G_GATE_CMD_DONE");

#endif /* !GGATE_ABI_H */
