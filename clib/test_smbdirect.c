//go:build ignore

/*
 * test_smbdirect.c - exercises the C library against smbdirectd and a Go
 * SMB Direct peer (smbdirectd/server/clib_test.go drives the peer's side):
 *
 *   test_smbdirect SOCKET HOST:PORT
 */
#define _GNU_SOURCE
#include "smbdirect.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, "FAIL line %d: ", __LINE__); fprintf(stderr, __VA_ARGS__); fprintf(stderr, " (errno %d %s; daemon: %s)\n", errno, strerror(errno), c ? sdd_last_error(c) : ""); return 1; } } while (0)

static struct sdd_descriptor desc_from(const unsigned char *p)
{
	struct sdd_descriptor d = { 0, 0, 0 };
	for (int i = 0; i < 8; i++) d.offset |= (uint64_t)p[i] << (8 * i);
	for (int i = 0; i < 4; i++) d.token |= (uint32_t)p[8 + i] << (8 * i);
	for (int i = 0; i < 4; i++) d.length |= (uint32_t)p[12 + i] << (8 * i);
	return d;
}

int main(int argc, char **argv)
{
	sdd_client *c = NULL;
	CHECK(argc == 3, "usage: test_smbdirect SOCKET HOST:PORT");
	c = sdd_open(argv[1]);
	CHECK(c, "sdd_open");
	CHECK(sdd_dial(c, "127.0.0.1:1", 2000, NULL) < 0 && errno == ECONNREFUSED, "dial to a closed port");
	CHECK(sdd_dial(c, "127.0.0.1", 2000, NULL) < 0 && errno == EINVAL, "dial to an address without a port");
	struct sdd_conn_info info;
	int fd = sdd_dial(c, argv[2], 10000, &info);
	CHECK(fd >= 0, "sdd_dial");
	CHECK(info.max_send_size == 1364 && info.max_read_write_size == 1 << 20, "negotiated %u %u", info.max_send_size, info.max_read_write_size);
	CHECK(sdd_write_pdu(fd, "hello from C", 12) == 0, "write_pdu");

	/* The peer sends a descriptor of 1 MiB it registered for our write. */
	unsigned char buf[4096];
	ssize_t n = sdd_read_pdu(fd, buf, sizeof buf);
	CHECK(n == 16, "descriptor PDU of %zd bytes", n);
	struct sdd_descriptor d = desc_from(buf);
	FILE *tf = tmpfile();
	CHECK(tf, "tmpfile");
	for (int i = 0; i < (1 << 20); i++) fputc((i * 7) & 0xff, tf);
	fflush(tf);
	int64_t moved = sdd_rdma_write(c, info.handle, fileno(tf), 0, &d, 1);
	CHECK(moved == 1 << 20, "rdma_write moved %lld", (long long)moved);
	/* Again, asynchronously: two halves in flight, collected in reverse. */
	struct sdd_descriptor h1 = d, h2 = d;
	h1.length = h2.length = d.length / 2;
	h2.offset += h1.length;
	uint64_t r1, r2;
	CHECK(sdd_rdma_write_start(c, info.handle, fileno(tf), 0, &h1, 1, &r1) == 0, "write_start 1");
	CHECK(sdd_rdma_write_start(c, info.handle, fileno(tf), h1.length, &h2, 1, &r2) == 0, "write_start 2");
	/* A synchronous call meanwhile files the replies that come first. */
	CHECK(sdd_close_handle(c, 999998) < 0 && errno == ENOENT, "close of an unknown handle between");
	uint64_t r3;
	CHECK(sdd_rdma_write_start(c, 999997, fileno(tf), 0, &h1, 1, &r3) == 0, "write_start on an unknown connection");
	CHECK(sdd_wait(c, r3) < 0 && errno == ENOENT, "its wait");
	CHECK(sdd_wait(c, r2) == h2.length, "wait 2");
	CHECK(sdd_wait(c, r1) == h1.length, "wait 1");
	CHECK(sdd_wait(c, r1) < 0 && errno == ENOENT, "second wait");
	CHECK(sdd_send(c, info.handle, "written, invalidating", 21, d.token) == 0, "send with invalidate");

	/* We register a memfd for the peer's write and tell it where. */
	int mfd = memfd_create("test", MFD_CLOEXEC);
	CHECK(mfd >= 0 && ftruncate(mfd, 65536) == 0, "memfd");
	uint64_t reg;
	struct sdd_descriptor mine;
	CHECK(sdd_register(c, info.handle, mfd, 0, 65536, SDD_PEER_WRITE, &reg, &mine) == 0, "register");
	unsigned char db[16];
	for (int i = 0; i < 8; i++) db[i] = mine.offset >> (8 * i);
	for (int i = 0; i < 4; i++) db[8 + i] = mine.token >> (8 * i);
	for (int i = 0; i < 4; i++) db[12 + i] = mine.length >> (8 * i);
	CHECK(sdd_write_pdu(fd, db, 16) == 0, "write descriptor");
	n = sdd_read_pdu(fd, buf, sizeof buf);
	CHECK(n == 7 && memcmp(buf, "written", 7) == 0, "peer's answer (%zd bytes)", n);
	unsigned char *m = mmap(NULL, 65536, PROT_READ, MAP_SHARED, mfd, 0);
	CHECK(m != MAP_FAILED, "mmap");
	for (int i = 0; i < 65536; i++) CHECK(m[i] == ((i * 3) & 0xff), "memfd byte %d is %d", i, m[i]);
	CHECK(sdd_deregister(c, reg) == 0, "deregister");
	CHECK(sdd_deregister(c, reg) < 0 && errno == ENOENT, "second deregister");
	CHECK(sdd_close_handle(c, 999999) < 0 && errno == ENOENT, "close of an unknown handle");
	close(fd);

	/* Listen and accept: the Go side connects to the printed address. */
	uint64_t lh;
	char bound[128];
	CHECK(sdd_listen(c, "127.0.0.1:0", &lh, bound, sizeof bound) == 0, "listen");
	CHECK(sdd_accept(c, lh + 12345, NULL) < 0 && errno == ENOENT, "accept on an unknown listener");
	/* A transfer in flight while sdd_accept waits: its reply (an error,
	 * the connection is unknown) must be kept for sdd_wait. */
	uint64_t r4;
	CHECK(sdd_rdma_write_start(c, 999996, fileno(tf), 0, &h1, 1, &r4) == 0, "write_start before accept");
	printf("LISTENING %s\n", bound);
	fflush(stdout);
	struct sdd_conn_info ai;
	int afd = sdd_accept(c, lh, &ai);
	CHECK(afd >= 0, "accept");
	CHECK(sdd_wait(c, r4) < 0 && errno == ENOENT, "wait after accept");
	n = sdd_read_pdu(afd, buf, sizeof buf);
	CHECK(n == 12 && memcmp(buf, "hello server", 12) == 0, "accepted connection's PDU (%zd bytes)", n);
	CHECK(sdd_write_pdu(afd, "hello client", 12) == 0, "reply");
	n = sdd_read_pdu(afd, buf, sizeof buf);
	CHECK(n == 0 && errno == 0, "EOF after the peer closed (%zd)", n);
	close(afd);
	CHECK(sdd_close_handle(c, lh) == 0, "close listener");
	sdd_close(c);
	printf("C_TEST_OK\n");
	return 0;
}
