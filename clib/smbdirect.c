//go:build ignore

/* smbdirect.c - see smbdirect.h and docs/smbdirectd.md. */
#define _GNU_SOURCE
#include "smbdirect.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

enum {
	HDR = 16,
	VERSION = 1,
	T_HELLO = 0x01, T_DIAL = 0x02, T_LISTEN = 0x03, T_CLOSE = 0x04, T_REGISTER = 0x05, T_DEREGISTER = 0x06,
	T_RDMA_WRITE = 0x07, T_RDMA_READ = 0x08, T_SEND = 0x09,
	T_OK = 0x80, T_HELLO_OK = 0x81, T_CONN = 0x82, T_LISTENING = 0x83, T_REGISTERED = 0x85, T_ERROR = 0xff,
	MAX_MSG = HDR + 12 + 65536,
	MAX_DESC = 256,
	MAX_EVENTS = 64,
	MAX_LISTENERS = 16,
	MAX_PENDING = 64,
};

/* Little-endian encoding. */
static unsigned char *put16(unsigned char *p, uint16_t v) { p[0] = v; p[1] = v >> 8; return p + 2; }
static unsigned char *put32(unsigned char *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = v >> (8 * i); return p + 4; }
static unsigned char *put64(unsigned char *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = v >> (8 * i); return p + 8; }
static uint16_t get16(const unsigned char *p) { return p[0] | p[1] << 8; }
static uint32_t get32(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t get64(const unsigned char *p) { return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32; }

/* An accepted connection that arrived before sdd_accept asked for it. */
struct event {
	uint64_t listen_id;
	int fd;
	struct sdd_conn_info info;
};

/* An asynchronous request (sdd_rdma_*_start) and, once done, its reply. */
struct pending {
	uint64_t id;
	int done;
	int err; /* errno of an Error reply, 0 for OK */
	uint64_t value;
	char msg[128];
};

struct sdd_client {
	int fd;
	struct pending pend[MAX_PENDING];
	int npend;
	uint64_t next_id;
	char err[256];
	struct event events[MAX_EVENTS];
	int nevents;
	/* Listener handles and the Listen request ids their events carry. */
	uint64_t lhandle[MAX_LISTENERS], lid[MAX_LISTENERS];
	int nlisteners;
	unsigned char buf[MAX_MSG];
};

static void parse_conn(const unsigned char *b, size_t blen, struct sdd_conn_info *info)
{
	memset(info, 0, sizeof *info);
	info->handle = get64(b);
	info->max_send_size = get32(b + 16);
	info->max_fragmented_send = get32(b + 20);
	info->max_fragmented_recv = get32(b + 24);
	info->max_read_write_size = get32(b + 28);
	size_t rl = get16(b + 32);
	if (rl > blen - 34) rl = blen - 34;
	if (rl >= sizeof info->remote) rl = sizeof info->remote - 1;
	memcpy(info->remote, b + 34, rl);
}

/* keep_event queues the message in c->buf for sdd_accept if it is an
 * accepted connection (a Conn event), and drops it otherwise. */
static void keep_event(sdd_client *c, size_t blen, int fd)
{
	uint64_t id = get64(c->buf + 8);
	if (c->buf[3] != T_CONN || fd < 0 || blen < 34) {
		if (fd >= 0) close(fd);
		return;
	}
	if (c->nevents == MAX_EVENTS) { /* drop the oldest */
		close(c->events[0].fd);
		memmove(c->events, c->events + 1, (MAX_EVENTS - 1) * sizeof c->events[0]);
		c->nevents--;
	}
	struct event *e = &c->events[c->nevents++];
	e->listen_id = id;
	e->fd = fd;
	parse_conn(c->buf + HDR, blen, &e->info);
}

static unsigned char *header(sdd_client *c, int type, uint64_t *id)
{
	unsigned char *p = c->buf;
	*id = c->next_id++;
	p = put16(p, 0x4453);
	*p++ = VERSION;
	*p++ = type;
	p = put32(p, 0);
	return put64(p, *id);
}

static void seterr(sdd_client *c, int e, const char *msg)
{
	snprintf(c->err, sizeof c->err, "%s", msg);
	errno = e;
}

/* recv_msg receives one datagram into c->buf, keeping the first passed
 * descriptor in *fd (-1 if none; others are closed). It returns its length,
 * 0 for a malformed message (its descriptor closed), or -1 with errno set
 * when the session is gone. */
static ssize_t recv_msg(sdd_client *c, int *fd)
{
	struct iovec iov = { c->buf, sizeof c->buf };
	union { struct cmsghdr h; char b[CMSG_SPACE(4 * sizeof(int))]; } ctl;
	struct msghdr m = { 0 };
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	m.msg_control = ctl.b;
	m.msg_controllen = sizeof ctl.b;
	ssize_t n;
	*fd = -1;
	do n = recvmsg(c->fd, &m, MSG_CMSG_CLOEXEC); while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		seterr(c, errno, "nothing pending (the control socket is non-blocking)");
		return -1;
	}
	if (n <= 0) {
		seterr(c, n == 0 ? ECONNRESET : errno, "the daemon closed the session");
		return -1;
	}
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
		int nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (int i = 0; i < nfd; i++) {
			int f;
			memcpy(&f, CMSG_DATA(cm) + i * sizeof(int), sizeof f);
			if (*fd < 0) *fd = f; else close(f);
		}
	}
	if (n < HDR || get16(c->buf) != 0x4453 || c->buf[2] != VERSION || get32(c->buf + 4) != (uint32_t)n) {
		if (*fd >= 0) close(*fd);
		*fd = -1;
		return 0;
	}
	return n;
}

/* send_msg sends the message c->buf[0:end) with fd (-1: none). */
static int send_msg(sdd_client *c, unsigned char *end, int fd)
{
	size_t len = end - c->buf;
	put32(c->buf + 4, (uint32_t)len);
	struct iovec iov = { c->buf, len };
	union { struct cmsghdr h; char b[CMSG_SPACE(4 * sizeof(int))]; } ctl;
	struct msghdr m = { 0 };
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	if (fd >= 0) {
		memset(&ctl, 0, sizeof ctl);
		m.msg_control = ctl.b;
		m.msg_controllen = CMSG_SPACE(sizeof(int));
		struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	}
	ssize_t n;
	do n = sendmsg(c->fd, &m, MSG_NOSIGNAL); while (n < 0 && errno == EINTR);
	if (n < 0) {
		seterr(c, errno, "sending to the daemon failed");
		return -1;
	}
	return 0;
}

static struct pending *find_pending(sdd_client *c, uint64_t id)
{
	for (int i = 0; i < c->npend; i++)
		if (c->pend[i].id == id) return &c->pend[i];
	return NULL;
}

/* error_reply copies the Error reply in c->buf (body of blen bytes) into
 * *code and msg. */
static void error_reply(sdd_client *c, size_t blen, int *code, char *msg, size_t cap)
{
	const unsigned char *b = c->buf + HDR;
	uint32_t e = blen >= 6 ? get32(b) : EIO;
	size_t ml = blen >= 6 ? get16(b + 4) : 0;
	if (ml > blen - 6) ml = blen >= 6 ? blen - 6 : 0;
	snprintf(msg, cap, "%.*s", (int)ml, (const char *)b + 6);
	*code = e ? (int)e : EIO;
}

/* dispatch files a message that is not the reply being waited for: the
 * reply to an asynchronous request, or an event for sdd_accept. */
static void dispatch(sdd_client *c, size_t blen, int fd)
{
	struct pending *p = find_pending(c, get64(c->buf + 8));
	if (!p || p->done) {
		keep_event(c, blen, fd);
		return;
	}
	if (fd >= 0) close(fd);
	p->done = 1;
	if (c->buf[3] == T_ERROR) {
		error_reply(c, blen, &p->err, p->msg, sizeof p->msg);
	} else if (c->buf[3] != T_OK || blen != 8) {
		p->err = EPROTO;
		snprintf(p->msg, sizeof p->msg, "unexpected reply");
	} else {
		p->value = get64(c->buf + HDR);
	}
}

/* roundtrip sends the message c->buf[0:end) with fd (-1: none) and waits
 * for the reply to id. On return the reply is in c->buf; *blen is its body
 * length and *rfd a received descriptor (-1 if none). Returns the reply
 * type, or -1 with errno set (an Error reply sets errno to its code). */
static int roundtrip(sdd_client *c, unsigned char *end, uint64_t id, int fd, size_t *blen, int *rfd)
{
	if (send_msg(c, end, fd) < 0) return -1;
	if (rfd) *rfd = -1;
	for (;;) {
		int got;
		ssize_t n = recv_msg(c, &got);
		if (n < 0) return -1;
		if (n == 0) {
			seterr(c, EPROTO, "malformed reply from the daemon");
			return -1;
		}
		if (get64(c->buf + 8) != id) { /* not ours: another request's, or an event */
			dispatch(c, n - HDR, got);
			continue;
		}
		int type = c->buf[3];
		*blen = n - HDR;
		if (type == T_ERROR) {
			if (got >= 0) close(got);
			int code;
			error_reply(c, *blen, &code, c->err, sizeof c->err);
			errno = code;
			return -1;
		}
		if (rfd) *rfd = got; else if (got >= 0) close(got);
		return type;
	}
}

sdd_client *sdd_open(const char *path)
{
	if (!path) path = SDD_DEFAULT_SOCKET;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof sa.sun_path) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	strcpy(sa.sun_path, path);
	sdd_client *c = calloc(1, sizeof *c);
	if (!c) return NULL;
	c->next_id = 1;
	c->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		int e = errno;
		if (c->fd >= 0) close(c->fd);
		free(c);
		errno = e;
		return NULL;
	}
	uint64_t id;
	unsigned char *p = header(c, T_HELLO, &id);
	*p++ = VERSION;
	*p++ = VERSION;
	p = put16(p, 0);
	size_t blen;
	int t = roundtrip(c, p, id, -1, &blen, NULL);
	if (t != T_HELLO_OK) {
		int e = t < 0 ? errno : EPROTO;
		sdd_close(c);
		errno = e;
		return NULL;
	}
	return c;
}

void sdd_close(sdd_client *c)
{
	if (!c) return;
	for (int i = 0; i < c->nevents; i++) close(c->events[i].fd);
	close(c->fd);
	free(c);
}

const char *sdd_last_error(const sdd_client *c) { return c ? c->err : "no client"; }

int sdd_dial(sdd_client *c, const char *addr, uint32_t timeout_ms, struct sdd_conn_info *info)
{
	return sdd_dial_flags(c, addr, timeout_ms, 0, info);
}

int sdd_dial_flags(sdd_client *c, const char *addr, uint32_t timeout_ms, uint32_t flags, struct sdd_conn_info *info)
{
	size_t al = strlen(addr);
	if (al > 1024) {
		seterr(c, EINVAL, "address too long");
		return -1;
	}
	uint64_t id;
	unsigned char *p = header(c, T_DIAL, &id);
	p = put32(p, timeout_ms);
	p = put16(p, (uint16_t)al);
	memcpy(p, addr, al);
	p += al;
	/* Optional on the wire, as Listen's: older daemons understand us. */
	if (flags) p = put32(p, flags);
	size_t blen;
	int fd;
	int t = roundtrip(c, p, id, -1, &blen, &fd);
	if (t < 0) return -1;
	const unsigned char *b = c->buf + HDR;
	if (t != T_CONN || fd < 0 || blen < 34) {
		if (fd >= 0) close(fd);
		seterr(c, EPROTO, "unexpected reply to dial");
		return -1;
	}
	if (info) parse_conn(b, blen, info);
	return fd;
}

int sdd_listen(sdd_client *c, const char *addr, uint64_t *listener, char *bound, size_t bound_len)
{
	return sdd_listen_flags(c, addr, 0, listener, bound, bound_len);
}

int sdd_fileno(const sdd_client *c) { return c->fd; }

void sdd_set_fileno(sdd_client *c, int fd) { c->fd = fd; }

int sdd_listen_flags(sdd_client *c, const char *addr, uint32_t flags, uint64_t *listener, char *bound,
		     size_t bound_len)
{
	size_t al = strlen(addr);
	if (al > 1024) {
		seterr(c, EINVAL, "address too long");
		return -1;
	}
	uint64_t id;
	unsigned char *p = header(c, T_LISTEN, &id);
	p = put16(p, (uint16_t)al);
	memcpy(p, addr, al);
	p += al;
	/* Flags are optional on the wire: without them older daemons understand us. */
	if (flags) p = put32(p, flags);
	size_t blen;
	int t = roundtrip(c, p, id, -1, &blen, NULL);
	if (t < 0) return -1;
	const unsigned char *b = c->buf + HDR;
	if (t != T_LISTENING || blen < 10) {
		seterr(c, EPROTO, "unexpected reply to listen");
		return -1;
	}
	/* Accepted connections come as Conn events with the Listen's id. */
	uint64_t h = get64(b);
	if (c->nlisteners == MAX_LISTENERS) {
		sdd_close_handle(c, h);
		seterr(c, EMFILE, "at most 16 listeners per client");
		return -1;
	}
	c->lhandle[c->nlisteners] = h;
	c->lid[c->nlisteners++] = id;
	if (listener) *listener = h;
	if (bound && bound_len) {
		size_t bl = get16(b + 8);
		if (bl > blen - 10) bl = blen - 10;
		if (bl >= bound_len) bl = bound_len - 1;
		memcpy(bound, b + 10, bl);
		bound[bl] = 0;
	}
	return 0;
}

int sdd_accept(sdd_client *c, uint64_t handle, struct sdd_conn_info *info)
{
	uint64_t listener = 0;
	int known = 0;
	for (int i = 0; i < c->nlisteners; i++) {
		if (c->lhandle[i] == handle) {
			listener = c->lid[i];
			known = 1;
		}
	}
	if (!known) {
		seterr(c, ENOENT, "no such listener");
		return -1;
	}
	for (;;) {
		for (int i = 0; i < c->nevents; i++) {
			if (c->events[i].listen_id != listener) continue;
			int fd = c->events[i].fd;
			if (info) *info = c->events[i].info;
			memmove(c->events + i, c->events + i + 1, (c->nevents - i - 1) * sizeof c->events[0]);
			c->nevents--;
			return fd;
		}
		/* Wait for the next datagram; every Conn event is kept, and so
		 * is the reply to a transfer in flight. */
		int got;
		ssize_t n = recv_msg(c, &got);
		if (n < 0) return -1;
		if (n == 0) continue; /* malformed: skipped */
		dispatch(c, n - HDR, got);
	}
}

static int expect_ok(sdd_client *c, unsigned char *end, uint64_t id, int fd, uint64_t *value)
{
	size_t blen;
	int t = roundtrip(c, end, id, fd, &blen, NULL);
	if (t < 0) return -1;
	if (t != T_OK || blen != 8) {
		seterr(c, EPROTO, "unexpected reply");
		return -1;
	}
	if (value) *value = get64(c->buf + HDR);
	return 0;
}

int sdd_close_handle(sdd_client *c, uint64_t handle)
{
	uint64_t id;
	unsigned char *p = header(c, T_CLOSE, &id);
	p = put64(p, handle);
	return expect_ok(c, p, id, -1, NULL);
}

int sdd_register(sdd_client *c, uint64_t conn, int fd, uint64_t off, uint32_t len, int access,
		 uint64_t *reg, struct sdd_descriptor *desc)
{
	uint64_t id;
	unsigned char *p = header(c, T_REGISTER, &id);
	p = put64(p, conn);
	*p++ = (unsigned char)access;
	*p++ = 0; *p++ = 0; *p++ = 0;
	p = put64(p, off);
	p = put32(p, len);
	size_t blen;
	int t = roundtrip(c, p, id, fd, &blen, NULL);
	if (t < 0) return -1;
	if (t != T_REGISTERED || blen != 24) {
		seterr(c, EPROTO, "unexpected reply to register");
		return -1;
	}
	const unsigned char *b = c->buf + HDR;
	if (reg) *reg = get64(b);
	if (desc) {
		desc->offset = get64(b + 8);
		desc->token = get32(b + 16);
		desc->length = get32(b + 20);
	}
	return 0;
}

int sdd_deregister(sdd_client *c, uint64_t reg)
{
	uint64_t id;
	unsigned char *p = header(c, T_DEREGISTER, &id);
	p = put64(p, reg);
	return expect_ok(c, p, id, -1, NULL);
}

/* transfer_msg builds an RDMA Write or Read request in c->buf and returns
 * its end, or NULL for a bad descriptor count. */
static unsigned char *transfer_msg(sdd_client *c, int type, uint64_t conn, uint64_t off,
				   const struct sdd_descriptor *d, int n, uint64_t *id)
{
	if (n < 1 || n > MAX_DESC) {
		seterr(c, EINVAL, "1 to 256 descriptors");
		return NULL;
	}
	unsigned char *p = header(c, type, id);
	p = put64(p, conn);
	p = put64(p, off);
	p = put16(p, (uint16_t)n);
	for (int i = 0; i < n; i++) {
		p = put64(p, d[i].offset);
		p = put32(p, d[i].token);
		p = put32(p, d[i].length);
	}
	return p;
}

static int64_t transfer(sdd_client *c, int type, uint64_t conn, int fd, uint64_t off,
			const struct sdd_descriptor *d, int n)
{
	uint64_t id, v;
	unsigned char *end = transfer_msg(c, type, conn, off, d, n, &id);
	if (!end || expect_ok(c, end, id, fd, &v) < 0) return -1;
	return (int64_t)v;
}

static int transfer_start(sdd_client *c, int type, uint64_t conn, int fd, uint64_t off,
			  const struct sdd_descriptor *d, int n, uint64_t *req)
{
	if (c->npend == MAX_PENDING) {
		seterr(c, EAGAIN, "64 requests in flight: wait for one first");
		return -1;
	}
	uint64_t id;
	unsigned char *end = transfer_msg(c, type, conn, off, d, n, &id);
	if (!end || send_msg(c, end, fd) < 0) return -1;
	struct pending *p = &c->pend[c->npend++];
	memset(p, 0, sizeof *p);
	p->id = id;
	*req = id;
	return 0;
}

int64_t sdd_rdma_write(sdd_client *c, uint64_t conn, int fd, uint64_t off, const struct sdd_descriptor *d, int n)
{
	return transfer(c, T_RDMA_WRITE, conn, fd, off, d, n);
}

int64_t sdd_rdma_read(sdd_client *c, uint64_t conn, int fd, uint64_t off, const struct sdd_descriptor *d, int n)
{
	return transfer(c, T_RDMA_READ, conn, fd, off, d, n);
}

int sdd_rdma_write_start(sdd_client *c, uint64_t conn, int fd, uint64_t off,
			 const struct sdd_descriptor *d, int n, uint64_t *req)
{
	return transfer_start(c, T_RDMA_WRITE, conn, fd, off, d, n, req);
}

int sdd_rdma_read_start(sdd_client *c, uint64_t conn, int fd, uint64_t off,
			const struct sdd_descriptor *d, int n, uint64_t *req)
{
	return transfer_start(c, T_RDMA_READ, conn, fd, off, d, n, req);
}

int64_t sdd_wait(sdd_client *c, uint64_t req)
{
	struct pending *p = find_pending(c, req);
	if (!p) {
		seterr(c, ENOENT, "no such request in flight");
		return -1;
	}
	while (!p->done) {
		int got;
		ssize_t n = recv_msg(c, &got);
		if (n < 0) return -1;
		if (n == 0) {
			seterr(c, EPROTO, "malformed reply from the daemon");
			return -1;
		}
		dispatch(c, n - HDR, got);
	}
	struct pending done = *p;
	*p = c->pend[--c->npend];
	if (done.err) {
		seterr(c, done.err, done.msg);
		return -1;
	}
	return (int64_t)done.value;
}

int sdd_send(sdd_client *c, uint64_t conn, const void *pdu, size_t len, uint32_t invalidate)
{
	if (len == 0 || len > 65536) {
		seterr(c, EMSGSIZE, "a Send carries 1 to 65536 bytes");
		return -1;
	}
	uint64_t id;
	unsigned char *p = header(c, T_SEND, &id);
	p = put64(p, conn);
	p = put32(p, invalidate);
	memcpy(p, pdu, len);
	return expect_ok(c, p + len, id, -1, NULL);
}

static int full_write(int fd, const unsigned char *p, size_t n)
{
	while (n > 0) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR) continue;
		if (k <= 0) return -1;
		p += k;
		n -= k;
	}
	return 0;
}

static int full_read(int fd, unsigned char *p, size_t n)
{
	while (n > 0) {
		ssize_t k = read(fd, p, n);
		if (k < 0 && errno == EINTR) continue;
		if (k < 0) return -1;
		if (k == 0) { errno = 0; return 0; }
		p += k;
		n -= k;
	}
	return 1;
}

int sdd_write_pdu(int fd, const void *pdu, size_t len)
{
	if (len == 0 || len > 0xffffff) {
		errno = EMSGSIZE;
		return -1;
	}
	unsigned char h[4] = { 0, len >> 16, len >> 8, len };
	if (full_write(fd, h, 4) < 0) return -1;
	return full_write(fd, pdu, len);
}

ssize_t sdd_read_pdu(int fd, void *buf, size_t cap)
{
	unsigned char h[4];
	int r = full_read(fd, h, 4);
	if (r <= 0) return r < 0 ? -1 : 0;
	size_t len = (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
	if (h[0] != 0) {
		errno = EPROTO;
		return -1;
	}
	if (len > cap) {
		errno = EMSGSIZE;
		return -1;
	}
	r = full_read(fd, buf, len);
	if (r <= 0) {
		if (r == 0) errno = ECONNRESET;
		return -1;
	}
	return (ssize_t)len;
}
