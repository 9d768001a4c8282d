//go:build ignore

/*
 * example.c - an SMB2 exchange through smbdirectd, in C.
 *
 *   smbdirect_example [-s SOCKET] HOST:PORT
 *
 * Connects through the daemon to an SMB Direct server, sends SMB2
 * NEGOTIATE and prints the dialect chosen, then forks: the child sends
 * SMB2 ECHO on the inherited fd and checks the answer, and after it exits
 * the parent does the same on the same connection. The stream fd is used
 * exactly as a TCP socket to port 445 would be.
 */
#define _GNU_SOURCE
#include "smbdirect.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void put16(unsigned char *p, unsigned v) { p[0] = v; p[1] = v >> 8; }
static void put64(unsigned char *p, unsigned long long v) { for (int i = 0; i < 8; i++) p[i] = v >> (8 * i); }
static unsigned get16(const unsigned char *p) { return p[0] | p[1] << 8; }
static unsigned get32(const unsigned char *p) { return p[0] | p[1] << 8 | p[2] << 16 | (unsigned)p[3] << 24; }

/* smb2_header fills a 64-byte SMB2 sync request header. */
static void smb2_header(unsigned char *h, unsigned command, unsigned long long msgid)
{
	memset(h, 0, 64);
	memcpy(h, "\xfeSMB", 4);
	put16(h + 4, 64);      /* StructureSize */
	put16(h + 6, 1);       /* CreditCharge */
	put16(h + 12, command);
	put16(h + 14, 8);      /* CreditRequest */
	put64(h + 24, msgid);
}

static int echo(int fd, unsigned long long msgid, const char *who)
{
	unsigned char req[68], resp[256];
	smb2_header(req, 0x000d, msgid);
	put16(req + 64, 4); /* ECHO StructureSize */
	put16(req + 66, 0);
	if (sdd_write_pdu(fd, req, sizeof req) < 0) {
		perror("write ECHO");
		return -1;
	}
	ssize_t n = sdd_read_pdu(fd, resp, sizeof resp);
	if (n < 64 + 4 || memcmp(resp, "\xfeSMB", 4) != 0 || get16(resp + 12) != 0x000d) {
		fprintf(stderr, "%s: bad ECHO response (%zd bytes)\n", who, n);
		return -1;
	}
	unsigned status = get32(resp + 8);
	printf("%s (pid %d): SMB2 ECHO message %llu answered, status 0x%08x\n", who, getpid(), msgid, status);
	fflush(stdout); /* the child leaves with _exit */
	return status == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
	/* Status lines as they happen, also into a pipe or a file: the
	 * example waits on the network between them. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	const char *sock = getenv("SMBDIRECTD_SOCKET");
	int opt;
	while ((opt = getopt(argc, argv, "s:")) != -1) {
		if (opt == 's') sock = optarg;
		else goto usage;
	}
	if (optind != argc - 1) {
	usage:
		fprintf(stderr, "usage: %s [-s SOCKET] HOST:PORT\n", argv[0]);
		return 2;
	}
	sdd_client *c = sdd_open(sock);
	if (!c) {
		fprintf(stderr, "cannot reach smbdirectd at %s: %s\n", sock ? sock : SDD_DEFAULT_SOCKET, strerror(errno));
		return 1;
	}
	struct sdd_conn_info info;
	int fd = sdd_dial(c, argv[optind], 30000, &info);
	if (fd < 0) {
		fprintf(stderr, "SMB Direct to %s: %s (%s)\n", argv[optind], strerror(errno), sdd_last_error(c));
		return 1;
	}
	printf("SMB Direct to %s: connection %llu, max send %u, max fragmented send %u, max read/write %u\n",
	       info.remote, (unsigned long long)info.handle, info.max_send_size, info.max_fragmented_send,
	       info.max_read_write_size);

	unsigned char req[64 + 36 + 8], resp[1024];
	smb2_header(req, 0x0000, 0);
	unsigned char *b = req + 64;
	memset(b, 0, 36);
	put16(b, 36);     /* StructureSize */
	put16(b + 2, 4);  /* DialectCount */
	put16(b + 4, 1);  /* SecurityMode: signing enabled */
	memcpy(b + 12, "smbdirect-cexam", 16);
	put16(b + 36, 0x0202);
	put16(b + 38, 0x0210);
	put16(b + 40, 0x0300);
	put16(b + 42, 0x0302);
	if (sdd_write_pdu(fd, req, sizeof req) < 0) {
		perror("write NEGOTIATE");
		return 1;
	}
	ssize_t n = sdd_read_pdu(fd, resp, sizeof resp);
	if (n < 64 + 8 || memcmp(resp, "\xfeSMB", 4) != 0 || get16(resp + 12) != 0 || get32(resp + 8) != 0) {
		fprintf(stderr, "bad NEGOTIATE response (%zd bytes)\n", n);
		return 1;
	}
	unsigned dialect = get16(resp + 64 + 4);
	printf("SMB2 NEGOTIATE answered: dialect %x.%x.%x\n", dialect >> 8, (dialect >> 4) & 0xf, dialect & 0xf);
	fflush(stdout);

	pid_t pid = fork();
	if (pid < 0) {
		perror("fork");
		return 1;
	}
	if (pid == 0) {
		sdd_close(c); /* the child needs only the inherited stream fd */
		_exit(echo(fd, 1, "child") == 0 ? 0 : 1);
	}
	int st;
	if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "child failed\n");
		return 1;
	}
	if (echo(fd, 2, "parent") < 0) return 1;
	close(fd);
	sdd_close(c);
	printf("EXAMPLE_OK\n");
	return 0;
}
