//go:build ignore

/*
 * fuzz_preload.c - the preload's parser of the addresses the daemon sends
 * (Listening's bound address, Conn's peer), for FuzzPreloadAddr in
 * clib/preload_test.go. It includes preload.c for its static functions and
 * is built with AddressSanitizer and UBSan. Each stdin line is a family
 * (4 or 6) and the address in hex; each answer is "bad" or
 * "ok FAMILY IP PORT LEN".
 */
#include "preload.c"

static int unhex(int c)
{
	if (c >= '0' && c <= '9') return c - '0';
	if (c >= 'a' && c <= 'f') return c - 'a' + 10;
	return -1;
}

int main(void)
{
	static char line[8192], addr[4096];
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof line, stdin)) {
		size_t n = 0;
		for (const char *p = line + 2; unhex(p[0]) >= 0 && unhex(p[1]) >= 0 && n < sizeof addr - 1; p += 2)
			addr[n++] = (char)(unhex(p[0]) << 4 | unhex(p[1]));
		addr[n] = 0;
		struct sockaddr_storage ss;
		socklen_t len = parse_addr(addr, line[0] == '6' ? AF_INET6 : AF_INET, &ss);
		if (!len) {
			printf("bad\n");
			continue;
		}
		char ip[INET6_ADDRSTRLEN];
		int port;
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
			inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
			port = ntohs(s4->sin_port);
		} else {
			struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
			inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
			port = ntohs(s6->sin6_port);
		}
		printf("ok %d %s %d %d\n", ss.ss_family == AF_INET ? 4 : 6, ip, port, (int)len);
	}
	return 0;
}
