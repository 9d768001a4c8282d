//go:build ignore

/*
 * test_preload.c - a TCP server as Samba's smbd is one, run with
 * libsmbdirect-preload.so against smbdirectd; clib/preload_test.go drives
 * the SMB Direct peers. It prints "DIAL n" when it wants connection n and
 * "C_PRELOAD_OK" at the end; any failed check prints "FAIL" and exits 1.
 *
 *   test_preload main PORT     the whole script on TCP port PORT
 *   test_preload v6 PORT       an AF_INET6 listener, one IPv4 peer
 *   test_preload gone PORT     the daemon goes away ("STOP 1")
 *   test_preload relisten PORT listen, close, listen again
 *   test_preload listen PORT   listen on PORT only, print LISTEN_OK or
 *                              LISTEN_FAIL <errno>
 *   test_preload connect PORT TCPPORT
 *                              connects to 127.0.0.1:PORT (SMBDIRECT_DIAL
 *                              sends it to an echoing SMB Direct peer) in
 *                              the ways a TCP client does, to 127.0.0.2:PORT
 *                              (dialed to where nothing listens) and to
 *                              127.0.0.1:TCPPORT (a TCP echo server; not
 *                              in SMBDIRECT_DIAL, "TCP <local port>");
 *                              prints C_CONNECT_OK
 *   test_preload connect1 PORT connect to 127.0.0.1:PORT blocking, print
 *                              CONNECT_OK or CONNECT_FAIL <errno>
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/sockios.h>

#define CHECK(x)                                                                                        \
	do {                                                                                            \
		if (!(x)) {                                                                             \
			printf("FAIL line %d: %s (errno %d %s)\n", __LINE__, #x, errno, strerror(errno)); \
			exit(1);                                                                        \
		}                                                                                       \
	} while (0)

static int tcp_listener(int port, int flags_before_listen)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(fd >= 0);
	int one = 1;
	CHECK(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
	if (flags_before_listen) { /* as smbd does: non-blocking and close-on-exec before listen */
		CHECK(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0);
		CHECK(fcntl(fd, F_SETFD, FD_CLOEXEC) == 0);
	}
	return fd;
}

static void say(const char *fmt, int n)
{
	printf(fmt, n);
	fflush(stdout);
}

static const char *fmt_addr(const struct sockaddr_in *a, char *buf, size_t cap)
{
	char ip[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
	snprintf(buf, cap, "%s:%d", ip, ntohs(a->sin_port));
	return buf;
}

/* wait_readable: poll until fd is readable, at most 20 s. */
static int wait_readable(int fd)
{
	struct pollfd p = { fd, POLLIN, 0 };
	return poll(&p, 1, 20000) == 1 && (p.revents & POLLIN);
}

static int read_full(int fd, void *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t k = read(fd, (char *)buf + got, n - got);
		if (k <= 0) return k < 0 ? -1 : 0;
		got += k;
	}
	return 1;
}

/* read_pdu reads one PDU with its 4-byte Direct TCP header. */
static int read_pdu(int fd, char *buf, size_t cap)
{
	unsigned char h[4];
	int r = read_full(fd, h, 4);
	if (r <= 0) return r < 0 ? -1 : 0;
	size_t len = (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
	if (h[0] || len >= cap || read_full(fd, buf, len) <= 0) return -1;
	buf[len] = 0;
	return (int)len;
}

static int write_pdu(int fd, const char *s)
{
	size_t len = strlen(s);
	unsigned char h[4] = { 0, len >> 16, len >> 8, len };
	if (write(fd, h, 4) != 4) return -1;
	return write(fd, s, len) == (ssize_t)len ? 0 : -1;
}

/* check_conn checks what a TCP server asks of its connected socket. */
static void check_conn(int fd, int n)
{
	struct sockaddr_in peer, local;
	socklen_t pl = sizeof peer, ll = sizeof local;
	CHECK(getpeername(fd, (struct sockaddr *)&peer, &pl) == 0);
	CHECK(pl == sizeof peer && peer.sin_family == AF_INET);
	CHECK(getsockname(fd, (struct sockaddr *)&local, &ll) == 0);
	CHECK(ll == sizeof local && local.sin_family == AF_INET);
	char a[64], b[64];
	printf("ADDR %d peer=%s local=%s\n", n, fmt_addr(&peer, a, sizeof a), fmt_addr(&local, b, sizeof b));
	fflush(stdout);

	int v = 1, got = -1;
	socklen_t vl = sizeof got;
	CHECK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v) == 0);
	CHECK(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &got, &vl) == 0 && got == 1 && vl == sizeof got);
	CHECK(setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &v, sizeof v) == 0);
	CHECK(getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &got, &vl) == 0 && got == 1);
	v = 30;
	CHECK(setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, sizeof v) == 0);
	CHECK(getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &got, &vl) == 0 && got == 30);
	CHECK(getsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &got, &vl) == 0 && got == 9);
	CHECK(setsockopt(fd, IPPROTO_IP, IP_TOS, &v, sizeof v) == 0);
	CHECK(getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &got, &vl) == 0 && got == AF_INET);
	CHECK(getsockopt(fd, SOL_SOCKET, SO_TYPE, &got, &vl) == 0 && got == SOCK_STREAM);
	CHECK(getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &got, &vl) == 0 && got == IPPROTO_TCP);
	CHECK(getsockopt(fd, IPPROTO_TCP, 9999, &got, &vl) < 0 && errno == ENOPROTOOPT);
	struct tcp_info ti;
	socklen_t tl = sizeof ti;
	memset(&ti, 0xee, sizeof ti);
	CHECK(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) == 0 && tl == sizeof ti);
	CHECK(ti.tcpi_state == TCP_ESTABLISHED && ti.tcpi_rto == 200000 && ti.tcpi_rtt > 0 && ti.tcpi_snd_mss > 0);
	CHECK(ti.tcpi_retransmits == 0 && ti.tcpi_unacked == 0);
	/* A short buffer gets the start, as from the kernel. */
	tl = 8;
	CHECK(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) == 0 && tl == 8);
	/* AF_UNIX answers these natively. */
	int q = -1;
	CHECK(ioctl(fd, SIOCOUTQ, &q) == 0 && q >= 0);
	CHECK(ioctl(fd, FIONREAD, &q) == 0 && q >= 0);
}

static int main_script(int port)
{
	int l = tcp_listener(port, 1);
	CHECK(listen(l, 16) == 0);
	/* The fd number and the flags the program set are kept. */
	CHECK(fcntl(l, F_GETFD) == FD_CLOEXEC);
	CHECK(fcntl(l, F_GETFL) & O_NONBLOCK);
	CHECK(listen(l, 32) == 0); /* listening again is fine */
	struct sockaddr_in la;
	socklen_t ll = sizeof la;
	CHECK(getsockname(l, (struct sockaddr *)&la, &ll) == 0 && la.sin_family == AF_INET && ntohs(la.sin_port) == port);
	int got;
	socklen_t gl = sizeof got;
	CHECK(getsockopt(l, SOL_SOCKET, SO_ACCEPTCONN, &got, &gl) == 0 && got == 1);
	CHECK(getsockopt(l, SOL_SOCKET, SO_TYPE, &got, &gl) == 0 && got == SOCK_STREAM);

	/* Nothing pending: EAGAIN from a non-blocking listener. */
	errno = 0;
	CHECK(accept(l, NULL, NULL) < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
	CHECK(accept4(l, NULL, NULL, SOCK_CLOEXEC) < 0 && errno == EAGAIN);
	CHECK(accept4(l, NULL, NULL, 0x4000) < 0 && errno == EINVAL);

	/* Another TCP listener, on another port, is a TCP listener. */
	int t = tcp_listener(0, 0);
	CHECK(listen(t, 4) == 0);
	struct sockaddr_in ta;
	socklen_t tal = sizeof ta;
	CHECK(getsockname(t, (struct sockaddr *)&ta, &tal) == 0 && ntohs(ta.sin_port) != port);

	int ep = epoll_create1(EPOLL_CLOEXEC);
	CHECK(ep >= 0);
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = l };
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev) == 0);
	ev.data.fd = t;
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, t, &ev) == 0);
	CHECK(epoll_wait(ep, &ev, 1, 0) == 0); /* nothing yet */

	/* 1: epoll wakes; accept returns a blocking fd without close-on-exec. */
	say("DIAL %d\n", 1);
	CHECK(epoll_wait(ep, &ev, 1, 20000) == 1 && ev.data.fd == l);
	struct sockaddr_in pa;
	socklen_t pal = sizeof pa;
	int c1 = accept(l, (struct sockaddr *)&pa, &pal);
	CHECK(c1 >= 0);
	CHECK(pal == sizeof pa && pa.sin_family == AF_INET && pa.sin_addr.s_addr == htonl(INADDR_LOOPBACK));
	CHECK(fcntl(c1, F_GETFD) == 0 && !(fcntl(c1, F_GETFL) & O_NONBLOCK));
	CHECK(epoll_wait(ep, &ev, 1, 0) == 0); /* consumed */
	check_conn(c1, 1);
	/* The peer's first PDU: FIONREAD counts it with its header. */
	CHECK(wait_readable(c1));
	int q = 0;
	for (int i = 0; i < 2000 && q < 9; i++) {
		CHECK(ioctl(c1, FIONREAD, &q) == 0);
		if (q < 9) usleep(1000);
	}
	CHECK(q == 9);

	/* The forked child serves the inherited fd; the parent closes it. */
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		char buf[256];
		close(l);
		struct sockaddr_in cp;
		socklen_t cpl = sizeof cp;
		if (getpeername(c1, (struct sockaddr *)&cp, &cpl) != 0 || cp.sin_port != pa.sin_port) _exit(2);
		if (read_pdu(c1, buf, sizeof buf) != 5 || strcmp(buf, "ping1")) _exit(3);
		if (write_pdu(c1, "pong1 from the child") < 0) _exit(4);
		/* The peer hangs up: EOF. */
		if (read_pdu(c1, buf, sizeof buf) != 0) _exit(6);
		/* By then the daemon has taken everything we wrote. (On AF_UNIX
		 * SIOCOUTQ counts buffer memory, not bytes: 0 only when drained,
		 * which is what smbd's ack tracking waits for.) */
		int oq = -1;
		if (ioctl(c1, SIOCOUTQ, &oq) != 0 || oq != 0) _exit(5);
		_exit(0);
	}
	close(c1);
	int status;
	CHECK(waitpid(pid, &status, 0) == pid);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) printf("child status %d\n", status);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	/* 2: accept4's flags, no address wanted; dup'ed fds are known by inode. */
	say("DIAL %d\n", 2);
	CHECK(epoll_wait(ep, &ev, 1, 20000) == 1 && ev.data.fd == l);
	int c2 = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	CHECK(c2 >= 0);
	CHECK(fcntl(c2, F_GETFD) == FD_CLOEXEC && (fcntl(c2, F_GETFL) & O_NONBLOCK));
	int d2 = dup(c2);
	CHECK(d2 >= 0);
	close(c2);
	check_conn(d2, 2);
	char buf[256];
	CHECK(read(d2, buf, sizeof buf) < 0 && errno == EAGAIN);

	/* 3: a blocking listener blocks in accept; a short address buffer
	 * gets the start (the family) and the full length. */
	CHECK(fcntl(l, F_SETFL, fcntl(l, F_GETFL) & ~O_NONBLOCK) == 0);
	say("DIAL %d\n", 3);
	pal = 2;
	memset(&pa, 0, sizeof pa);
	int c3 = accept(l, (struct sockaddr *)&pa, &pal);
	CHECK(c3 >= 0 && pal == sizeof pa && pa.sin_family == AF_INET && pa.sin_port == 0);
	check_conn(c3, 3);
	CHECK(write_pdu(c3, "hello 3") == 0);
	close(c3);
	close(d2);

	/* The plain TCP listener still works, and its connection is TCP. */
	int cl = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(cl >= 0 && connect(cl, (struct sockaddr *)&ta, sizeof ta) == 0);
	CHECK(epoll_wait(ep, &ev, 1, 20000) == 1 && ev.data.fd == t);
	struct sockaddr_in ca, cla;
	socklen_t cal = sizeof ca, clal = sizeof cla;
	int tc = accept(t, (struct sockaddr *)&ca, &cal);
	CHECK(tc >= 0);
	CHECK(getsockname(cl, (struct sockaddr *)&cla, &clal) == 0 && ca.sin_port == cla.sin_port);
	struct tcp_info ti;
	socklen_t tl = sizeof ti;
	CHECK(getsockopt(tc, IPPROTO_TCP, TCP_INFO, &ti, &tl) == 0 && ti.tcpi_state == TCP_ESTABLISHED);
	CHECK(write(cl, "x", 1) == 1 && read(tc, buf, 1) == 1 && buf[0] == 'x');
	int one = 1;
	CHECK(setsockopt(tc, IPPROTO_TCP, 9999, &one, sizeof one) < 0); /* the kernel's answer, not ours */
	close(tc);
	close(cl);
	close(t);
	close(ep);
	close(l);
	printf("C_PRELOAD_OK\n");
	return 0;
}

/* v6_script: an AF_INET6 listener on [::]:PORT reports an IPv4 peer as
 * IPv4-mapped, as a dual-stack socket does. */
static int v6_script(int port)
{
	int l = socket(AF_INET6, SOCK_STREAM, 0);
	CHECK(l >= 0);
	struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = IN6ADDR_ANY_INIT };
	CHECK(bind(l, (struct sockaddr *)&sa, sizeof sa) == 0);
	CHECK(listen(l, 4) == 0);
	struct sockaddr_in6 la;
	socklen_t ll = sizeof la;
	CHECK(getsockname(l, (struct sockaddr *)&la, &ll) == 0 && ll == sizeof la && la.sin6_family == AF_INET6);
	say("DIAL %d\n", 1);
	struct sockaddr_in6 pa, pn, sn;
	socklen_t pal = sizeof pa, pnl = sizeof pn, snl = sizeof sn;
	int c = accept(l, (struct sockaddr *)&pa, &pal);
	CHECK(c >= 0 && pal == sizeof pa && pa.sin6_family == AF_INET6);
	CHECK(getpeername(c, (struct sockaddr *)&pn, &pnl) == 0 && pnl == sizeof pn && !memcmp(&pa, &pn, sizeof pa));
	CHECK(getsockname(c, (struct sockaddr *)&sn, &snl) == 0 && snl == sizeof sn && sn.sin6_family == AF_INET6);
	int got;
	socklen_t gl = sizeof got;
	CHECK(getsockopt(c, SOL_SOCKET, SO_DOMAIN, &got, &gl) == 0 && got == AF_INET6);
	char a[INET6_ADDRSTRLEN], b[INET6_ADDRSTRLEN];
	inet_ntop(AF_INET6, &pa.sin6_addr, a, sizeof a);
	inet_ntop(AF_INET6, &sn.sin6_addr, b, sizeof b);
	printf("ADDR 1 peer=[%s]:%d local=[%s]:%d\n", a, ntohs(pa.sin6_port), b, ntohs(sn.sin6_port));
	close(c);
	close(l);
	printf("C_PRELOAD_OK\n");
	return 0;
}

/* gone_script: when the daemon goes away, accept fails once with
 * ECONNABORTED and the listener no longer wakes epoll (no busy loop). */
static int gone_script(int port)
{
	int l = tcp_listener(port, 1);
	CHECK(listen(l, 4) == 0);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = l };
	CHECK(ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev) == 0);
	say("STOP %d\n", 1);
	CHECK(epoll_wait(ep, &ev, 1, 20000) == 1 && ev.data.fd == l);
	CHECK(accept(l, NULL, NULL) < 0 && errno == ECONNABORTED);
	CHECK(epoll_wait(ep, &ev, 1, 300) == 0);
	CHECK(fcntl(l, F_GETFD) == FD_CLOEXEC && (fcntl(l, F_GETFL) & O_NONBLOCK));
	printf("C_PRELOAD_OK\n");
	return 0;
}

/* relisten_script: the program closes its listener and listens anew on
 * the port (as smbd may on a reload): a fresh session takes over. */
static int relisten_script(int port)
{
	int l = tcp_listener(port, 0);
	CHECK(listen(l, 4) == 0);
	close(l);
	l = tcp_listener(port, 0);
	CHECK(listen(l, 4) == 0);
	say("DIAL %d\n", 1);
	int c = accept(l, NULL, NULL);
	CHECK(c >= 0);
	CHECK(write_pdu(c, "relistened") == 0);
	close(c);
	close(l);
	printf("C_PRELOAD_OK\n");
	return 0;
}

static struct sockaddr_in ip4(const char *ip, int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	inet_pton(AF_INET, ip, &sa.sin_addr);
	return sa;
}

/* echo_check: a PDU out, "echo: " and it back (the Go peer's reply). */
static void echo_check(int fd, const char *msg)
{
	char want[128], buf[256];
	snprintf(want, sizeof want, "echo: %s", msg);
	CHECK(write_pdu(fd, msg) == 0);
	CHECK(wait_readable(fd));
	CHECK(read_pdu(fd, buf, sizeof buf) == (int)strlen(want) && !strcmp(buf, want));
}

/* check_dialed checks what a TCP client asks of its connected socket:
 * the peer is the address it connected to, our side is of its family. */
static void check_dialed(int fd, const struct sockaddr *to, socklen_t tolen)
{
	struct sockaddr_storage peer, local;
	socklen_t pl = sizeof peer, ll = sizeof local;
	CHECK(getpeername(fd, (struct sockaddr *)&peer, &pl) == 0 && pl == tolen && !memcmp(&peer, to, tolen));
	CHECK(getsockname(fd, (struct sockaddr *)&local, &ll) == 0 && ll == tolen && local.ss_family == to->sa_family);
	if (to->sa_family == AF_INET) {
		struct sockaddr_in *l4 = (struct sockaddr_in *)&local;
		CHECK(l4->sin_addr.s_addr == htonl(INADDR_LOOPBACK) && ntohs(l4->sin_port) >= 32768);
	} else {
		struct sockaddr_in6 *l6 = (struct sockaddr_in6 *)&local;
		CHECK(ntohs(l6->sin6_port) >= 32768);
	}
	int v = 1, got = -1;
	socklen_t vl = sizeof got;
	CHECK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v) == 0);
	CHECK(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &got, &vl) == 0 && got == 1);
	CHECK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &got, &vl) == 0 && got == 0);
	CHECK(getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &got, &vl) == 0 && got == to->sa_family);
	struct tcp_info ti;
	socklen_t tl = sizeof ti;
	CHECK(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) == 0 && ti.tcpi_state == TCP_ESTABLISHED);
	/* Connected already: a second connect says so, as TCP's does. */
	CHECK(connect(fd, to, tolen) < 0 && errno == EISCONN);
}

/* nb_connect connects a non-blocking socket the way smbclient does:
 * connect, and on EINPROGRESS wait for writability and read SO_ERROR.
 * Prints how connect returned ("NB 0" or "NB EINPROGRESS"); returns the
 * connection's error (0 when connected). */
static int nb_connect(int fd, const struct sockaddr *to, socklen_t tolen)
{
	int r = connect(fd, to, tolen);
	int e = errno;
	printf("NB %s\n", r == 0 ? "0" : e == EINPROGRESS ? "EINPROGRESS" : strerror(e));
	if (r < 0 && e != EINPROGRESS) return e;
	int ep = epoll_create1(EPOLL_CLOEXEC);
	CHECK(ep >= 0);
	struct epoll_event ev = { .events = EPOLLOUT, .data.fd = fd };
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0);
	CHECK(epoll_wait(ep, &ev, 1, 20000) == 1 && (ev.events & EPOLLOUT));
	close(ep);
	int err = -1;
	socklen_t el = sizeof err;
	CHECK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0);
	return err;
}

static int connect_script(int port, int tcpport)
{
	/* 1: blocking, close-on-exec from socket(). */
	int a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(a >= 0);
	struct sockaddr_in to = ip4("127.0.0.1", port);
	CHECK(connect(a, (struct sockaddr *)&to, sizeof to) == 0);
	CHECK(fcntl(a, F_GETFD) == FD_CLOEXEC && !(fcntl(a, F_GETFL) & O_NONBLOCK));
	check_dialed(a, (struct sockaddr *)&to, sizeof to);
	echo_check(a, "blocking");

	/* 2: non-blocking, without close-on-exec; epoll for writability and
	 * SO_ERROR as smbclient does; the socket stays non-blocking. */
	int b = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(b >= 0 && fcntl(b, F_SETFL, fcntl(b, F_GETFL) | O_NONBLOCK) == 0);
	CHECK(nb_connect(b, (struct sockaddr *)&to, sizeof to) == 0);
	CHECK(fcntl(b, F_GETFD) == 0 && (fcntl(b, F_GETFL) & O_NONBLOCK));
	check_dialed(b, (struct sockaddr *)&to, sizeof to);
	char buf[64];
	CHECK(read(b, buf, sizeof buf) < 0 && errno == EAGAIN);
	echo_check(b, "non-blocking");

	/* 3: an AF_INET6 socket to the IPv4-mapped address. */
	int c = socket(AF_INET6, SOCK_STREAM, 0);
	CHECK(c >= 0);
	struct sockaddr_in6 to6 = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
	inet_pton(AF_INET6, "::ffff:127.0.0.1", &to6.sin6_addr);
	CHECK(connect(c, (struct sockaddr *)&to6, sizeof to6) == 0);
	check_dialed(c, (struct sockaddr *)&to6, sizeof to6);
	echo_check(c, "v6");

	/* 4: the dup'ed fd of a forked child is the connection too. */
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		int d = dup(a);
		struct sockaddr_in p;
		socklen_t pl = sizeof p;
		if (d < 0 || getpeername(d, (struct sockaddr *)&p, &pl) != 0 || p.sin_port != htons(port)) _exit(2);
		echo_check(d, "child");
		_exit(0);
	}
	int status;
	CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(a);
	close(b);
	close(c);
	printf("CLOSED 3\n");

	/* 5: the SMB Direct peer refuses: connect fails with ECONNREFUSED,
	 * blocking or not, and the socket stays a TCP socket. */
	struct sockaddr_in bad = ip4("127.0.0.2", port);
	int f = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(f >= 0);
	CHECK(connect(f, (struct sockaddr *)&bad, sizeof bad) < 0 && errno == ECONNREFUSED);
	int got;
	socklen_t gl = sizeof got;
	CHECK(getsockopt(f, SOL_SOCKET, SO_DOMAIN, &got, &gl) == 0 && got == AF_INET);
	close(f);
	f = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	CHECK(f >= 0 && nb_connect(f, (struct sockaddr *)&bad, sizeof bad) == ECONNREFUSED);
	close(f);

	/* 6: other addresses are TCP: the kernel's connection. */
	int t = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in tto = ip4("127.0.0.1", tcpport);
	CHECK(t >= 0 && connect(t, (struct sockaddr *)&tto, sizeof tto) == 0);
	CHECK(write(t, "tcp", 3) == 3 && read_full(t, buf, 3) == 1 && !memcmp(buf, "tcp", 3));
	/* The kernel's address: the Go server checks it saw this port. */
	struct sockaddr_in tl;
	socklen_t tll = sizeof tl;
	CHECK(getsockname(t, (struct sockaddr *)&tl, &tll) == 0);
	printf("TCP %d\n", ntohs(tl.sin_port));
	close(t);
	printf("C_CONNECT_OK\n");
	return 0;
}

/* connect1_script: one blocking connect, its outcome printed. */
static int connect1_script(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(fd >= 0);
	struct sockaddr_in to = ip4("127.0.0.1", port);
	if (connect(fd, (struct sockaddr *)&to, sizeof to) < 0) {
		printf("CONNECT_FAIL %d\n", errno);
		return 0;
	}
	printf("CONNECT_OK\n");
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 3) {
		fprintf(stderr, "usage: test_preload main|v6|gone|relisten|listen|connect1 PORT, connect PORT TCPPORT\n");
		return 2;
	}
	int port = atoi(argv[2]);
	if (!strcmp(argv[1], "connect") && argc == 4) return connect_script(port, atoi(argv[3]));
	if (!strcmp(argv[1], "connect1")) return connect1_script(port);
	if (!strcmp(argv[1], "main")) return main_script(port);
	if (!strcmp(argv[1], "v6")) return v6_script(port);
	if (!strcmp(argv[1], "gone")) return gone_script(port);
	if (!strcmp(argv[1], "relisten")) return relisten_script(port);
	int l = tcp_listener(port, 0);
	if (listen(l, 4) < 0) {
		printf("LISTEN_FAIL %d\n", errno);
		return 0;
	}
	printf("LISTEN_OK\n");
	return 0;
}
