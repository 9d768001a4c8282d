//go:build ignore

/*
 * preload.c - libsmbdirect-preload.so: an unmodified TCP server (Samba's
 * smbd) serves SMB Direct through smbdirectd.
 *
 * LD_PRELOAD'ed, it turns the program's listen() on TCP port
 * SMBDIRECT_PORT (default 445) into an smbdirectd listener on
 * SMBDIRECT_LISTEN (default ":5445"). The control socket of that daemon
 * session takes the listening fd's number (dup2), so poll/epoll/select on
 * it wake when the daemon pushes a Conn event, and accept() returns the
 * connection's stream fd (a socketpair end carrying SMB2 PDUs with their
 * 4-byte Direct TCP header, exactly as TCP would). What a TCP server asks
 * of its connected socket and a socketpair cannot answer is answered
 * here: getpeername/getsockname give IPv4/IPv6 addresses, IPPROTO_TCP
 * options (TCP_NODELAY, keepalive times, TCP_INFO, ...) succeed.
 *
 * It also turns an unmodified TCP client (smbclient) into an SMB Direct
 * one: a connect() to an address listed in SMBDIRECT_DIAL becomes a
 * daemon Dial of the SMB Direct address listed with it, whose stream fd
 * takes the program's socket's number; the same faked calls answer on it.
 * Every other fd passes through untouched.
 *
 * Environment: SMBDIRECT_SOCKET (the daemon's control socket, default
 * SDD_DEFAULT_SOCKET), SMBDIRECT_LISTEN, SMBDIRECT_PORT, SMBDIRECT_CHANNEL
 * (1, the default: the daemon's server-side RDMA channel for listeners and
 * its client-side one for dialed connections; 0: none),
 * SMBDIRECT_DIAL ("IP:PORT=SMBDIRECTADDR,..."; IPv6 as [v6]:port).
 *
 * Built with -fvisibility=hidden: only the interposed libc calls are
 * exported. libc and libdl only.
 */
#define _GNU_SOURCE
#include "smbdirect.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define API __attribute__((visibility("default")))

/* The next definitions of the calls we interpose (libc's). */
static int (*real_listen)(int, int);
static int (*real_connect)(int, const struct sockaddr *, socklen_t);
static int (*real_accept)(int, struct sockaddr *, socklen_t *);
static int (*real_accept4)(int, struct sockaddr *, socklen_t *, int);
static int (*real_getpeername)(int, struct sockaddr *, socklen_t *);
static int (*real_getsockname)(int, struct sockaddr *, socklen_t *);
static int (*real_getsockopt)(int, int, int, void *, socklen_t *);
static int (*real_setsockopt)(int, int, int, const void *, socklen_t);

static void resolve(void)
{
	real_listen = (int (*)(int, int))dlsym(RTLD_NEXT, "listen");
	real_connect = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
	real_accept = (int (*)(int, struct sockaddr *, socklen_t *))dlsym(RTLD_NEXT, "accept");
	real_accept4 = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
	real_getpeername = (int (*)(int, struct sockaddr *, socklen_t *))dlsym(RTLD_NEXT, "getpeername");
	real_getsockname = (int (*)(int, struct sockaddr *, socklen_t *))dlsym(RTLD_NEXT, "getsockname");
	real_getsockopt = (int (*)(int, int, int, void *, socklen_t *))dlsym(RTLD_NEXT, "getsockopt");
	real_setsockopt = (int (*)(int, int, int, const void *, socklen_t))dlsym(RTLD_NEXT, "setsockopt");
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
#define REAL(f) (pthread_once(&once, resolve), real_##f)

/* mu guards everything below; accept_mu serialises use of the daemon
 * session (an accept may block, lookups must not wait for it). */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t accept_mu = PTHREAD_MUTEX_INITIALIZER;

/* The daemon session, once a listen() was taken over. Its socket is known
 * by inode, not fd number, so dup/close/fork of the listener do not
 * confuse us. */
static sdd_client *session;
static uint64_t listener;
static dev_t ctl_dev;
static ino_t ctl_ino;
static int ctl_family;                    /* the program's listening socket's */
static struct sockaddr_storage ctl_tcp;   /* its TCP address, for getsockname */
static socklen_t ctl_tcp_len;
static struct sockaddr_storage ctl_bound; /* the SMB Direct address */
static char ctl_bound_str[128];
/* The family of each listener fd number (smbd may listen on :: and
 * 0.0.0.0, both copies of the one session): accept reports addresses in
 * the family of the socket it is called on, as the kernel would. */
enum { MAX_LFD = 1024 };
static unsigned char lfamily[MAX_LFD];
static int daemon_gone;

/* TCP options a program may set and read back. */
enum { OPT_NODELAY, OPT_KEEPIDLE, OPT_KEEPINTVL, OPT_KEEPCNT, OPT_USER_TIMEOUT, OPT_QUICKACK, OPT_CORK,
       OPT_IP_TOS, NOPTS };
static const int opt_default[NOPTS] = { 0, 7200, 75, 9, 0, 1, 0, 0 };

/* A connection handed out by accept, by the inode of its stream socket. */
struct conn {
	dev_t dev;
	ino_t ino;
	struct sockaddr_storage peer, local;
	socklen_t peer_len, local_len;
	uint32_t mss;
	int opt[NOPTS];
};
static struct conn *conns;
static size_t nconns, capconns;

static void prefork(void) { pthread_mutex_lock(&mu); }
static void postfork(void) { pthread_mutex_unlock(&mu); }

__attribute__((constructor)) static void init(void)
{
	pthread_atfork(prefork, postfork, postfork);
}

static int sock_id(int fd, dev_t *dev, ino_t *ino)
{
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode)) return -1;
	*dev = st.st_dev;
	*ino = st.st_ino;
	return 0;
}

/* is_listener: fd is (a copy of) our daemon session's socket. */
static int is_listener(int fd)
{
	dev_t d;
	ino_t i;
	if (sock_id(fd, &d, &i) < 0) return 0;
	pthread_mutex_lock(&mu);
	int yes = session && d == ctl_dev && i == ctl_ino;
	pthread_mutex_unlock(&mu);
	return yes;
}

/* find_conn returns fd's entry; call with mu held. */
static struct conn *find_conn(int fd)
{
	dev_t d;
	ino_t i;
	if (!nconns || sock_id(fd, &d, &i) < 0) return NULL;
	for (size_t k = 0; k < nconns; k++)
		if (conns[k].ino == i && conns[k].dev == d) return &conns[k];
	return NULL;
}

/* gc drops the entries of sockets no fd of this process refers to any
 * more (the parent of a forking server closes each after the fork).
 * Called with mu held when the table is full, so it costs little. */
static void gc(void)
{
	DIR *dir = opendir("/proc/self/fd");
	if (!dir) return;
	char *live = calloc(nconns, 1);
	if (!live) {
		closedir(dir);
		return;
	}
	struct dirent *e;
	while ((e = readdir(dir)) != NULL) {
		dev_t d;
		ino_t i;
		if (e->d_name[0] == '.' || sock_id(atoi(e->d_name), &d, &i) < 0) continue;
		for (size_t k = 0; k < nconns; k++)
			if (conns[k].ino == i && conns[k].dev == d) live[k] = 1;
	}
	closedir(dir);
	size_t n = 0;
	for (size_t k = 0; k < nconns; k++)
		if (live[k]) conns[n++] = conns[k];
	nconns = n;
	free(live);
}

static struct conn *add_conn(int fd)
{
	dev_t d;
	ino_t i;
	if (sock_id(fd, &d, &i) < 0) return NULL;
	if (nconns == capconns) {
		if (capconns) gc();
		if (nconns * 2 >= capconns) { /* still half full: grow */
			size_t cap = capconns ? capconns * 2 : 64;
			struct conn *c = realloc(conns, cap * sizeof *c);
			if (!c) return NULL;
			conns = c;
			capconns = cap;
		}
	}
	struct conn *c = &conns[nconns++];
	memset(c, 0, sizeof *c);
	c->dev = d;
	c->ino = i;
	memcpy(c->opt, opt_default, sizeof c->opt);
	return c;
}

/* parse_addr parses "host:port", "[v6]:port" or ":port" (host empty: the
 * wildcard of family) into ss, as family (AF_INET6 maps IPv4 addresses).
 * Returns the length, or 0. */
static socklen_t parse_addr(const char *s, int family, struct sockaddr_storage *ss)
{
	char host[64];
	const char *port;
	if (s[0] == '[') {
		const char *end = strchr(s, ']');
		if (!end || end[1] != ':' || (size_t)(end - s - 1) >= sizeof host) return 0;
		memcpy(host, s + 1, end - s - 1);
		host[end - s - 1] = 0;
		port = end + 2;
	} else {
		const char *colon = strrchr(s, ':');
		if (!colon || (size_t)(colon - s) >= sizeof host) return 0;
		memcpy(host, s, colon - s);
		host[colon - s] = 0;
		port = colon + 1;
	}
	long p = 0;
	size_t nd = strlen(port);
	if (nd == 0 || nd > 5) return 0;
	for (size_t k = 0; k < nd; k++) {
		if (port[k] < '0' || port[k] > '9') return 0;
		p = p * 10 + (port[k] - '0');
	}
	if (p > 65535) return 0;
	struct in_addr a4 = { htonl(INADDR_ANY) };
	struct in6_addr a6 = in6addr_any;
	int v6 = 0;
	if (host[0] && inet_pton(AF_INET, host, &a4) != 1) {
		if (inet_pton(AF_INET6, host, &a6) != 1) return 0;
		v6 = 1;
	}
	memset(ss, 0, sizeof *ss);
	if (family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)p);
		if (v6) {
			s6->sin6_addr = a6;
		} else if (host[0]) { /* IPv4-mapped, as a dual-stack socket reports it */
			s6->sin6_addr.s6_addr[10] = 0xff;
			s6->sin6_addr.s6_addr[11] = 0xff;
			memcpy(&s6->sin6_addr.s6_addr[12], &a4, 4);
		}
		return sizeof *s6;
	}
	if (v6) { /* an IPv6 peer on an IPv4 listener: report it as IPv6 */
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)p);
		s6->sin6_addr = a6;
		return sizeof *s6;
	}
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	s4->sin_family = AF_INET;
	s4->sin_port = htons((uint16_t)p);
	s4->sin_addr = a4;
	return sizeof *s4;
}

static int is_wildcard(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET) return ((const struct sockaddr_in *)ss)->sin_addr.s_addr == htonl(INADDR_ANY);
	return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)ss)->sin6_addr);
}

/* local_for fills local with the address our side of a connection from
 * peer has: the listen address, or, if that is a wildcard, the source
 * address the routing table picks towards the peer (a UDP connect sends
 * nothing). */
static socklen_t local_for(const struct sockaddr_storage *peer, socklen_t peer_len, struct sockaddr_storage *local)
{
	/* In the peer's family (IPv4-mapped if the listener is AF_INET6). */
	socklen_t len = parse_addr(ctl_bound_str, peer->ss_family, local);
	if (!len) *local = ctl_bound, len = sizeof *local;
	uint16_t port = local->ss_family == AF_INET ? ((struct sockaddr_in *)local)->sin_port
						    : ((struct sockaddr_in6 *)local)->sin6_port;
	if (!is_wildcard(local)) return len;
	memset(local, 0, sizeof *local);
	local->ss_family = peer->ss_family;
	len = peer_len;
	int u = socket(peer->ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (u >= 0) {
		struct sockaddr_storage to = *peer;
		socklen_t l = sizeof *local;
		if (REAL(connect)(u, (struct sockaddr *)&to, peer_len) == 0 &&
		    REAL(getsockname)(u, (struct sockaddr *)local, &l) == 0)
			len = l;
		close(u);
	}
	if (local->ss_family == AF_INET) ((struct sockaddr_in *)local)->sin_port = port;
	else ((struct sockaddr_in6 *)local)->sin6_port = port;
	return len;
}

static void copy_addr(struct sockaddr *dst, socklen_t *dlen, const struct sockaddr_storage *src, socklen_t slen)
{
	if (!dst || !dlen) return;
	memcpy(dst, src, *dlen < slen ? *dlen : slen);
	*dlen = slen;
}

/* warn prints one line on stderr; the program's own output is not ours
 * to use. */
__attribute__((format(printf, 1, 2))) static void warn(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	fprintf(stderr, "smbdirect-preload: %s\n", line);
}

/* Settings from the environment. */
struct settings {
	const char *socket, *listen;
	int port, channel;
};

static int settings(struct settings *s)
{
	s->socket = getenv("SMBDIRECT_SOCKET");
	if (!s->socket || !*s->socket) s->socket = SDD_DEFAULT_SOCKET;
	s->listen = getenv("SMBDIRECT_LISTEN");
	if (!s->listen || !*s->listen) s->listen = ":5445";
	const char *p = getenv("SMBDIRECT_PORT");
	s->port = 445;
	if (p && *p) {
		char *end;
		long v = strtol(p, &end, 10);
		if (*end || v < 1 || v > 65535) {
			warn("SMBDIRECT_PORT=%s: want a TCP port (1-65535)", p);
			return -1;
		}
		s->port = (int)v;
	}
	const char *c = getenv("SMBDIRECT_CHANNEL");
	s->channel = 1;
	if (c && *c) {
		if (strcmp(c, "0") && strcmp(c, "1")) {
			warn("SMBDIRECT_CHANNEL=%s: want 1 or 0", c);
			return -1;
		}
		s->channel = c[0] == '1';
	}
	return 0;
}

/* takeover makes fd, a TCP socket bound to the SMB port, the daemon
 * session's control socket listening for SMB Direct connections. The TCP
 * socket is released: its fd number now names the control socket, and a
 * bound TCP socket that never listens would only refuse connections while
 * keeping the port (which the daemon's own iWARP listener may want when
 * SMBDIRECT_LISTEN names the same port). */
static int takeover(int fd, const struct settings *st, const struct sockaddr_storage *tcp, socklen_t tcp_len)
{
	sdd_client *c = sdd_open(st->socket);
	if (!c) {
		int e = errno;
		warn("cannot reach smbdirectd at %s: %s", st->socket, strerror(e));
		errno = e;
		return -1;
	}
	uint64_t h;
	char bound[128];
	if (sdd_listen_flags(c, st->listen, st->channel ? SDD_LISTEN_SERVER_CHANNEL : 0, &h, bound, sizeof bound) < 0) {
		int e = errno;
		warn("smbdirectd refused to listen on %s: %s (%s)%s", st->listen, sdd_last_error(c), strerror(e),
		     st->channel && e == EINVAL ? "; an smbdirectd without the server RDMA channel? SMBDIRECT_CHANNEL=0 listens without" : "");
		sdd_close(c);
		errno = e;
		return -1;
	}
	struct sockaddr_storage b;
	if (!parse_addr(bound, tcp->ss_family, &b)) {
		warn("smbdirectd reports an address we cannot parse: %s", bound);
		sdd_close(c);
		errno = EPROTO;
		return -1;
	}
	/* The program's descriptor and status flags carry over. */
	int fdflags = fcntl(fd, F_GETFD), flflags = fcntl(fd, F_GETFL);
	int old = sdd_fileno(c);
	if (fdflags < 0 || flflags < 0 || dup3(old, fd, fdflags & FD_CLOEXEC ? O_CLOEXEC : 0) < 0) {
		int e = errno;
		sdd_close(c);
		errno = e;
		return -1;
	}
	close(old);
	sdd_set_fileno(c, fd);
	fcntl(fd, F_SETFL, (fcntl(fd, F_GETFL) & ~O_NONBLOCK) | (flflags & O_NONBLOCK));
	dev_t d = 0;
	ino_t i = 0;
	sock_id(fd, &d, &i); /* cannot fail: fd is the session socket now */
	pthread_mutex_lock(&mu);
	session = c;
	listener = h;
	ctl_dev = d;
	ctl_ino = i;
	ctl_family = tcp->ss_family;
	ctl_tcp = *tcp;
	ctl_tcp_len = tcp_len;
	ctl_bound = b;
	snprintf(ctl_bound_str, sizeof ctl_bound_str, "%s", bound);
	daemon_gone = 0;
	if (fd < MAX_LFD) lfamily[fd] = (unsigned char)tcp->ss_family;
	pthread_mutex_unlock(&mu);
	/* One line: where the port went (with port 0 the only way to learn it). */
	fprintf(stderr, "smbdirect-preload: pid %d: TCP port %d is SMB Direct on %s\n", (int)getpid(), st->port, bound);
	return 0;
}

/* session_fd finds an fd of this process that is still the session's
 * socket (the program may have closed the one we hold), makes the session
 * use it and returns it; -1 if there is none. Called with accept_mu held. */
static int session_fd(void)
{
	dev_t d;
	ino_t i;
	int fd = sdd_fileno(session);
	if (fd >= 0 && sock_id(fd, &d, &i) == 0 && d == ctl_dev && i == ctl_ino) return fd;
	for (fd = 0; fd < MAX_LFD; fd++) {
		if (lfamily[fd] && sock_id(fd, &d, &i) == 0 && d == ctl_dev && i == ctl_ino) {
			sdd_set_fileno(session, fd);
			return fd;
		}
	}
	return -1;
}

API int listen(int fd, int backlog)
{
	if (is_listener(fd)) return 0; /* listening already */
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	int type = 0, proto = 0;
	socklen_t tl = sizeof type, pl = sizeof proto;
	if (REAL(getsockname)(fd, (struct sockaddr *)&ss, &len) < 0 ||
	    (ss.ss_family != AF_INET && ss.ss_family != AF_INET6) ||
	    REAL(getsockopt)(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_STREAM ||
	    REAL(getsockopt)(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &pl) < 0 || proto != IPPROTO_TCP)
		return REAL(listen)(fd, backlog);
	uint16_t port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
						      : ((struct sockaddr_in6 *)&ss)->sin6_port);
	struct settings st;
	if (settings(&st) < 0) {
		errno = EINVAL;
		return -1;
	}
	if (port != st.port) return REAL(listen)(fd, backlog);
	pthread_mutex_lock(&accept_mu);
	int r;
	if (session && (daemon_gone || session_fd() < 0)) {
		/* The program closed every copy (smbd reopens its listeners on a
		 * reload), or the daemon went away: start afresh. */
		sdd_set_fileno(session, -1); /* its socket is gone or not ours to close */
		sdd_close(session);
		pthread_mutex_lock(&mu);
		session = NULL;
		pthread_mutex_unlock(&mu);
	}
	if (session) {
		/* Another listener on the port (smbd opens one per address):
		 * a second copy of the one session wakes and accepts alike. */
		int fdflags = fcntl(fd, F_GETFD);
		/* Status flags (O_NONBLOCK) belong to the session socket, shared by all copies. */
		r = fdflags < 0 || dup3(sdd_fileno(session), fd, fdflags & FD_CLOEXEC ? O_CLOEXEC : 0) < 0 ? -1 : 0;
		if (r == 0 && fd < MAX_LFD) {
			pthread_mutex_lock(&mu);
			lfamily[fd] = (unsigned char)ss.ss_family;
			pthread_mutex_unlock(&mu);
		}
	} else {
		r = takeover(fd, &st, &ss, len);
	}
	pthread_mutex_unlock(&accept_mu);
	return r;
}

/* retire replaces a listener fd whose daemon session has ended by an
 * eventfd nobody writes: the session's socket would stay readable (EOF)
 * and spin the program's event loop on accept errors. */
static void retire(int fd)
{
	int fdflags = fcntl(fd, F_GETFD), fl = fcntl(fd, F_GETFL);
	int e = eventfd(0, EFD_CLOEXEC | (fl >= 0 && (fl & O_NONBLOCK) ? EFD_NONBLOCK : 0));
	if (e < 0) return;
	dup3(e, fd, fdflags >= 0 && (fdflags & FD_CLOEXEC) ? O_CLOEXEC : 0);
	close(e);
}

/* conn_accept serves accept/accept4 on a listener fd of ours. */
static int conn_accept(int fd, struct sockaddr *addr, socklen_t *alen, int flags)
{
	if (flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) {
		errno = EINVAL;
		return -1;
	}
	pthread_mutex_lock(&accept_mu);
	if (daemon_gone) {
		retire(fd);
		pthread_mutex_unlock(&accept_mu);
		errno = ECONNABORTED;
		return -1;
	}
	/* The program may accept on a copy of the fd we made (same socket). */
	sdd_set_fileno(session, fd);
	struct sdd_conn_info info;
	int s = sdd_accept(session, listener, &info);
	int e = errno;
	if (s < 0 && e != EAGAIN && e != EWOULDBLOCK && e != EINTR) {
		warn("the smbdirectd session ended (%s): no more SMB Direct connections", sdd_last_error(session));
		daemon_gone = 1;
		retire(fd);
		e = ECONNABORTED;
	}
	pthread_mutex_unlock(&accept_mu);
	if (s < 0) {
		errno = e;
		return -1;
	}
	/* The daemon's fds come close-on-exec and blocking; accept4's flags
	 * decide, as for a TCP accept. */
	if (fcntl(s, F_SETFD, flags & SOCK_CLOEXEC ? FD_CLOEXEC : 0) < 0 ||
	    fcntl(s, F_SETFL, (fcntl(s, F_GETFL) & ~O_NONBLOCK) | (flags & SOCK_NONBLOCK ? O_NONBLOCK : 0)) < 0) {
		e = errno;
		close(s);
		errno = e;
		return -1;
	}
	pthread_mutex_lock(&mu);
	struct conn *c = add_conn(s);
	if (!c) {
		pthread_mutex_unlock(&mu);
		close(s);
		errno = ENOMEM;
		return -1;
	}
	int family = fd < MAX_LFD && lfamily[fd] ? lfamily[fd] : ctl_family;
	c->peer_len = parse_addr(info.remote, family, &c->peer);
	if (!c->peer_len) { /* cannot happen with our daemon; keep the connection */
		memset(&c->peer, 0, sizeof c->peer);
		c->peer.ss_family = family;
		c->peer_len = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	}
	c->local_len = local_for(&c->peer, c->peer_len, &c->local);
	c->mss = info.max_send_size ? info.max_send_size : 1364;
	copy_addr(addr, alen, &c->peer, c->peer_len);
	pthread_mutex_unlock(&mu);
	return s;
}

API int accept(int fd, struct sockaddr *addr, socklen_t *alen)
{
	if (is_listener(fd)) return conn_accept(fd, addr, alen, 0);
	return REAL(accept)(fd, addr, alen);
}

API int accept4(int fd, struct sockaddr *addr, socklen_t *alen, int flags)
{
	if (is_listener(fd)) return conn_accept(fd, addr, alen, flags);
	return REAL(accept4)(fd, addr, alen, flags);
}

/* Outgoing connections (SMBDIRECT_DIAL). */

/* same_endpoint: a and b (AF_INET or AF_INET6, IPv4-mapped counting as IPv4)
 * name the same address and port. */
static int same_endpoint(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	unsigned char ia[16], ib[16];
	uint16_t pa, pb;
	const struct sockaddr_storage *x[2] = { a, b };
	unsigned char *ip[2] = { ia, ib };
	uint16_t *port[2] = { &pa, &pb };
	for (int k = 0; k < 2; k++) {
		memset(ip[k], 0, 16);
		if (x[k]->ss_family == AF_INET) {
			const struct sockaddr_in *s4 = (const struct sockaddr_in *)x[k];
			ip[k][10] = ip[k][11] = 0xff;
			memcpy(ip[k] + 12, &s4->sin_addr, 4);
			*port[k] = s4->sin_port;
		} else {
			const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)x[k];
			memcpy(ip[k], &s6->sin6_addr, 16);
			*port[k] = s6->sin6_port;
		}
	}
	return pa == pb && !memcmp(ia, ib, 16);
}

/* dial_target looks up the TCP address to in SMBDIRECT_DIAL, a comma-
 * separated list of "IP:PORT=SMBDIRECTADDR" (IP numeric: smbdirect exec
 * resolves names for us), and copies the SMB Direct address into target.
 * Returns 1 if found, 0 if not, -1 if the list is malformed. */
static int dial_target(const struct sockaddr_storage *to, char *target, size_t cap)
{
	const char *list = getenv("SMBDIRECT_DIAL");
	if (!list || !*list) return 0;
	const char *p = list;
	while (*p) {
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		char item[300];
		if (n >= sizeof item) goto bad;
		memcpy(item, p, n);
		item[n] = 0;
		char *eq = strchr(item, '=');
		if (!eq || !eq[1]) goto bad;
		*eq = 0;
		struct sockaddr_storage a;
		if (!parse_addr(item, AF_INET6, &a)) goto bad;
		if (same_endpoint(&a, to)) {
			if (strlen(eq + 1) >= cap) goto bad;
			strcpy(target, eq + 1);
			return 1;
		}
		p += n;
		if (*p == ',') p++;
	}
	return 0;
bad:
	warn("SMBDIRECT_DIAL=%s: want IP:PORT=HOST:PORT[,...] ([v6]:port for IPv6)", list);
	return -1;
}

/* dial_errno maps a failed daemon Dial to what connect() would report. */
static int dial_errno(int e)
{
	switch (e) {
	case ECONNREFUSED: case ETIMEDOUT: case EHOSTUNREACH: case ENETUNREACH: case EINTR: return e;
	case ENXIO: return EHOSTUNREACH; /* the SMB Direct host name did not resolve */
	default: return ECONNREFUSED;
	}
}

/* local_of fills local with a plausible address of our side towards
 * peer: the source the routing table picks (a UDP connect sends nothing)
 * with a port in the ephemeral range standing for the connection. */
static socklen_t local_of(const struct sockaddr_storage *peer, socklen_t peer_len, ino_t ino,
			  struct sockaddr_storage *local)
{
	memset(local, 0, sizeof *local);
	local->ss_family = peer->ss_family;
	socklen_t len = peer->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	int u = socket(peer->ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (u >= 0) {
		struct sockaddr_storage to = *peer;
		socklen_t l = sizeof *local;
		if (REAL(connect)(u, (struct sockaddr *)&to, peer_len) < 0 ||
		    REAL(getsockname)(u, (struct sockaddr *)local, &l) < 0) {
			memset(local, 0, sizeof *local);
			local->ss_family = peer->ss_family;
		}
		close(u);
	}
	uint16_t port = htons((uint16_t)(32768 + ino % 28232));
	if (local->ss_family == AF_INET) ((struct sockaddr_in *)local)->sin_port = port;
	else ((struct sockaddr_in6 *)local)->sin6_port = port;
	return len;
}

/* dial_over makes fd, the program's TCP socket, an SMB Direct connection
 * to target through the daemon; peer is the address it connected to.
 *
 * The Dial completes before connect returns, also for a non-blocking
 * socket: connect may succeed at once (as on loopback with AF_UNIX), and
 * programs that expect EINPROGRESS accept 0 (smbclient does), so no
 * thread is needed to finish it behind the program's back. The cost: a
 * non-blocking connect waits for the SMB Direct connection (the daemon's
 * dial timeout, 30 s, bounds it). */
static int dial_over(int fd, const struct sockaddr_storage *peer, socklen_t peer_len, const char *target)
{
	struct settings st;
	if (settings(&st) < 0) {
		errno = EINVAL;
		return -1;
	}
	sdd_client *c = sdd_open(st.socket);
	if (!c) {
		int e = errno;
		warn("cannot reach smbdirectd at %s to dial %s: %s", st.socket, target, strerror(e));
		errno = ECONNREFUSED;
		return -1;
	}
	struct sdd_conn_info info;
	int s = sdd_dial_flags(c, target, 0, st.channel ? SDD_DIAL_CLIENT_CHANNEL : 0, &info);
	if (s < 0) {
		int e = errno;
		warn("SMB Direct to %s: %s%s", target, sdd_last_error(c),
		     st.channel && e == EINVAL ? "; an smbdirectd without the client RDMA channel? SMBDIRECT_CHANNEL=0 dials without" : "");
		sdd_close(c);
		errno = dial_errno(e);
		return -1;
	}
	/* The connection lives on without the session (while its fd is open). */
	sdd_close(c);
	int fdflags = fcntl(fd, F_GETFD), flflags = fcntl(fd, F_GETFL);
	if (fdflags < 0 || flflags < 0 || dup3(s, fd, fdflags & FD_CLOEXEC ? O_CLOEXEC : 0) < 0) {
		int e = errno;
		close(s);
		errno = e;
		return -1;
	}
	close(s);
	if (fcntl(fd, F_SETFL, (fcntl(fd, F_GETFL) & ~O_NONBLOCK) | (flflags & O_NONBLOCK)) < 0) return -1;
	pthread_mutex_lock(&mu);
	struct conn *cn = add_conn(fd);
	if (!cn) {
		pthread_mutex_unlock(&mu);
		/* A connected socket the library cannot describe: still usable. */
		errno = ENOMEM;
		return -1;
	}
	cn->peer = *peer;
	cn->peer_len = peer_len;
	cn->local_len = local_of(peer, peer_len, cn->ino, &cn->local);
	cn->mss = info.max_send_size ? info.max_send_size : 1364;
	pthread_mutex_unlock(&mu);
	return 0;
}

API int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	if (!addr || (addr->sa_family != AF_INET && addr->sa_family != AF_INET6) ||
	    len < (addr->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)))
		goto pass;
	pthread_mutex_lock(&mu);
	int ours = find_conn(fd) != NULL;
	pthread_mutex_unlock(&mu);
	if (ours) { /* connected already, as TCP says to a second connect */
		errno = EISCONN;
		return -1;
	}
	struct sockaddr_storage to;
	memset(&to, 0, sizeof to);
	socklen_t tolen = addr->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	memcpy(&to, addr, tolen);
	char target[256];
	int found = dial_target(&to, target, sizeof target);
	if (found <= 0) {
		if (found < 0) {
			errno = EINVAL;
			return -1;
		}
		goto pass;
	}
	int type = 0, proto = 0;
	socklen_t tl = sizeof type, pl = sizeof proto;
	if (REAL(getsockopt)(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_STREAM ||
	    REAL(getsockopt)(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &pl) < 0 || proto != IPPROTO_TCP)
		goto pass;
	return dial_over(fd, &to, tolen, target);
pass:
	return REAL(connect)(fd, addr, len);
}

API int getpeername(int fd, struct sockaddr *addr, socklen_t *alen)
{
	pthread_mutex_lock(&mu);
	struct conn *c = find_conn(fd);
	if (c) {
		copy_addr(addr, alen, &c->peer, c->peer_len);
		pthread_mutex_unlock(&mu);
		return 0;
	}
	pthread_mutex_unlock(&mu);
	if (is_listener(fd)) {
		errno = ENOTCONN;
		return -1;
	}
	return REAL(getpeername)(fd, addr, alen);
}

API int getsockname(int fd, struct sockaddr *addr, socklen_t *alen)
{
	pthread_mutex_lock(&mu);
	struct conn *c = find_conn(fd);
	if (c) {
		copy_addr(addr, alen, &c->local, c->local_len);
		pthread_mutex_unlock(&mu);
		return 0;
	}
	pthread_mutex_unlock(&mu);
	if (is_listener(fd)) {
		pthread_mutex_lock(&mu);
		copy_addr(addr, alen, &ctl_tcp, ctl_tcp_len);
		pthread_mutex_unlock(&mu);
		return 0;
	}
	return REAL(getsockname)(fd, addr, alen);
}

static int opt_index(int level, int name)
{
	if (level == IPPROTO_TCP) {
		switch (name) {
		case TCP_NODELAY: return OPT_NODELAY;
		case TCP_KEEPIDLE: return OPT_KEEPIDLE;
		case TCP_KEEPINTVL: return OPT_KEEPINTVL;
		case TCP_KEEPCNT: return OPT_KEEPCNT;
		case TCP_USER_TIMEOUT: return OPT_USER_TIMEOUT;
		case TCP_QUICKACK: return OPT_QUICKACK;
		case TCP_CORK: return OPT_CORK;
		}
	}
	if ((level == IPPROTO_IP && name == IP_TOS) || (level == IPPROTO_IPV6 && name == IPV6_TCLASS)) return OPT_IP_TOS;
	return -1;
}

static int put_int(void *val, socklen_t *len, int v)
{
	if (!val || !len || *len < (socklen_t)sizeof(int)) {
		errno = EINVAL;
		return -1;
	}
	memcpy(val, &v, sizeof v);
	*len = sizeof v;
	return 0;
}

/* tcp_info of an established connection; the RDMA transport has no such
 * numbers, so they are TCP's usual ones on a fast link. smbd reads
 * tcpi_rto to time lease breaks. */
static int put_tcp_info(const struct conn *c, void *val, socklen_t *len)
{
	if (!val || !len) {
		errno = EFAULT;
		return -1;
	}
	struct tcp_info ti;
	memset(&ti, 0, sizeof ti);
	ti.tcpi_state = TCP_ESTABLISHED;
	ti.tcpi_rto = 200000; /* µs: TCP_RTO_MIN */
	ti.tcpi_ato = 40000;
	ti.tcpi_snd_mss = c ? c->mss : 1364;
	ti.tcpi_rcv_mss = ti.tcpi_snd_mss;
	ti.tcpi_pmtu = 1500;
	ti.tcpi_rcv_ssthresh = 65535;
	ti.tcpi_rtt = 100; /* µs */
	ti.tcpi_rttvar = 50;
	ti.tcpi_snd_ssthresh = 0x7fffffff;
	ti.tcpi_snd_cwnd = 10;
	ti.tcpi_advmss = ti.tcpi_snd_mss;
	ti.tcpi_reordering = 3;
	ti.tcpi_rcv_space = 65535;
	socklen_t n = *len < sizeof ti ? *len : sizeof ti;
	memcpy(val, &ti, n);
	*len = n;
	return 0;
}

/* sock_opt answers SOL_SOCKET options a socketpair would answer as
 * AF_UNIX; returns 1 if it did. */
static int sock_opt(int family, int name, void *val, socklen_t *len, int *r)
{
	switch (name) {
	case SO_DOMAIN: *r = put_int(val, len, family); return 1;
	case SO_PROTOCOL: *r = put_int(val, len, IPPROTO_TCP); return 1;
	}
	return 0;
}

API int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	pthread_mutex_lock(&mu);
	struct conn *c = find_conn(fd);
	if (c) {
		int r, k = opt_index(level, name);
		if (level == SOL_SOCKET) {
			int fam = c->peer.ss_family;
			pthread_mutex_unlock(&mu);
			if (sock_opt(fam, name, val, len, &r)) return r;
			return REAL(getsockopt)(fd, level, name, val, len);
		}
		if (k >= 0) r = put_int(val, len, c->opt[k]);
		else if (level == IPPROTO_TCP && name == TCP_INFO) r = put_tcp_info(c, val, len);
		else if (level == IPPROTO_TCP && name == TCP_MAXSEG) r = put_int(val, len, (int)c->mss);
		else {
			errno = ENOPROTOOPT;
			r = -1;
		}
		pthread_mutex_unlock(&mu);
		return r;
	}
	pthread_mutex_unlock(&mu);
	if (is_listener(fd)) {
		int r;
		if (level == SOL_SOCKET) {
			if (sock_opt(ctl_family, name, val, len, &r)) return r;
			if (name == SO_TYPE) return put_int(val, len, SOCK_STREAM);
			if (name == SO_ACCEPTCONN) return put_int(val, len, 1);
			return REAL(getsockopt)(fd, level, name, val, len);
		}
		int k = opt_index(level, name);
		if (k >= 0) return put_int(val, len, opt_default[k]);
		errno = ENOPROTOOPT;
		return -1;
	}
	return REAL(getsockopt)(fd, level, name, val, len);
}

API int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	if (level == SOL_SOCKET) return REAL(setsockopt)(fd, level, name, val, len); /* AF_UNIX has them */
	pthread_mutex_lock(&mu);
	struct conn *c = find_conn(fd);
	if (c) {
		int r = 0, k = opt_index(level, name);
		if (k >= 0) {
			if (!val || len < (socklen_t)sizeof(int)) {
				errno = EINVAL;
				r = -1;
			} else {
				memcpy(&c->opt[k], val, sizeof(int));
			}
		} else if (level != IPPROTO_TCP && level != IPPROTO_IP && level != IPPROTO_IPV6) {
			errno = ENOPROTOOPT;
			r = -1;
		}
		/* Other TCP/IP options have no meaning here: accepted. */
		pthread_mutex_unlock(&mu);
		return r;
	}
	pthread_mutex_unlock(&mu);
	if ((level == IPPROTO_TCP || level == IPPROTO_IP || level == IPPROTO_IPV6) && is_listener(fd)) return 0;
	return REAL(setsockopt)(fd, level, name, val, len);
}
