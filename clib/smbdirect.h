/*
 * smbdirect.h - C client of smbdirectd, the SMB Direct daemon.
 *
 * The daemon owns SMB Direct (SMB3 over RDMA) connections and hands each
 * one to the client as an ordinary stream socket fd on which SMB2 PDUs
 * travel with their 4-byte Direct TCP header, exactly as on TCP: use it
 * with read/write/poll/epoll, pass it to children across fork and exec.
 * RDMA transfers of file ranges are asked for here, with the file's fd;
 * the daemon moves the data itself.
 *
 * Protocol: docs/smbdirectd.md. No dependencies beyond libc. Calls wait
 * for their reply, except the RDMA transfers' _start forms (sdd_wait
 * collects them); one sdd_client may be used by one thread at a time (open
 * one per thread for concurrency). Errors return -1 and set errno; the
 * daemon's message is in sdd_last_error().
 */
#ifndef SMBDIRECT_H
#define SMBDIRECT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SDD_DEFAULT_SOCKET "/run/smbdirect/smbdirectd.sock"

#define SDD_PEER_READ 1  /* the peer may RDMA Read: an SMB2 WRITE's data */
#define SDD_PEER_WRITE 2 /* the peer may RDMA Write: an SMB2 READ's destination */

typedef struct sdd_client sdd_client;

/* What a connection negotiated. */
struct sdd_conn_info {
	uint64_t handle;
	uint32_t max_send_size;
	uint32_t max_fragmented_send;
	uint32_t max_fragmented_recv;
	uint32_t max_read_write_size;
	char remote[128];
};

/* An MS-SMBD Buffer Descriptor V1, as in an SMB2 channel info. */
struct sdd_descriptor {
	uint64_t offset;
	uint32_t token;
	uint32_t length;
};

/* sdd_open connects to the daemon (NULL path: SDD_DEFAULT_SOCKET). */
sdd_client *sdd_open(const char *socket_path);
void sdd_close(sdd_client *c);
const char *sdd_last_error(const sdd_client *c);

/* sdd_dial connects to an SMB Direct server ("host:port", 5445 for iWARP)
 * and returns the stream fd (close-on-exec set; clear it to pass the fd
 * across exec). timeout_ms 0 takes the daemon's default. On failure errno
 * says why: ENXIO no such host, EINVAL a bad address, ECONNREFUSED refused
 * (also the MPA or SMB Direct negotiation), EHOSTUNREACH/ENETUNREACH no
 * route, ETIMEDOUT the timeout passed. */
int sdd_dial(sdd_client *c, const char *addr, uint32_t timeout_ms, struct sdd_conn_info *info);

/* SDD_DIAL_CLIENT_CHANNEL: the dialed connection gets the daemon's
 * client-side RDMA channel (unsigned SMB2 READ/WRITE written inline on the
 * stream are sent with an RDMA channel; READ responses come back inline). */
#define SDD_DIAL_CLIENT_CHANNEL 1

/* sdd_dial_flags is sdd_dial with flags (SDD_DIAL_*); with flags 0 it
 * sends exactly what sdd_dial sends. */
int sdd_dial_flags(sdd_client *c, const char *addr, uint32_t timeout_ms, uint32_t flags, struct sdd_conn_info *info);

/* sdd_listen asks the daemon to accept SMB Direct connections on addr
 * ("host:port"; port 0 picks one). It returns the listener handle and
 * writes the bound address to bound (if not NULL). */
int sdd_listen(sdd_client *c, const char *addr, uint64_t *listener, char *bound, size_t bound_len);

/* SDD_LISTEN_SERVER_CHANNEL: connections accepted by the listener get the
 * daemon's server-side RDMA channel (it turns SMB2 READ/WRITE with an RDMA
 * channel into inline ones for the program and does the RDMA itself). */
#define SDD_LISTEN_SERVER_CHANNEL 1

/* sdd_listen_flags is sdd_listen with flags (SDD_LISTEN_*); with flags 0
 * it sends exactly what sdd_listen sends. */
int sdd_listen_flags(sdd_client *c, const char *addr, uint32_t flags, uint64_t *listener, char *bound,
		     size_t bound_len);

/* sdd_accept waits for the next connection accepted by listener and
 * returns its stream fd. Connections that arrive while other calls are in
 * progress are kept (up to 64; beyond that the oldest is dropped). */
int sdd_accept(sdd_client *c, uint64_t listener, struct sdd_conn_info *info);

/* sdd_fileno is the control socket: readable when an accepted connection
 * (or a reply) waits, for poll/epoll. With O_NONBLOCK set on it, sdd_accept
 * fails with EAGAIN instead of waiting. sdd_set_fileno makes the client use
 * fd, a duplicate of that socket the caller made (dup2 to a number a
 * program expects; the caller closes the old one). */
int sdd_fileno(const sdd_client *c);
void sdd_set_fileno(sdd_client *c, int fd);

/* sdd_close_handle ends a connection or listener at once, whoever holds
 * its fd. */
int sdd_close_handle(sdd_client *c, uint64_t handle);

/* sdd_register registers [off, off+len) of fd (a file or memfd; read-write
 * for SDD_PEER_WRITE) on a connection; *desc goes into the SMB2 request. */
int sdd_register(sdd_client *c, uint64_t conn, int fd, uint64_t off, uint32_t len, int access,
		 uint64_t *reg, struct sdd_descriptor *desc);
int sdd_deregister(sdd_client *c, uint64_t reg);

/* sdd_rdma_write sends [off, off+total) of fd to the peer's descriptors;
 * sdd_rdma_read fills fd from them. They return the bytes moved. */
int64_t sdd_rdma_write(sdd_client *c, uint64_t conn, int fd, uint64_t off,
		       const struct sdd_descriptor *d, int n);
int64_t sdd_rdma_read(sdd_client *c, uint64_t conn, int fd, uint64_t off,
		      const struct sdd_descriptor *d, int n);

/* Asynchronous forms: sdd_rdma_*_start sends the request and returns its
 * id in *req; the daemon moves the data meanwhile, and several transfers
 * (up to 64) may be in flight. sdd_wait waits for one and returns what
 * the synchronous call would have. The fd may be closed once the request
 * is sent: the daemon holds its own copy. */
int sdd_rdma_write_start(sdd_client *c, uint64_t conn, int fd, uint64_t off,
			 const struct sdd_descriptor *d, int n, uint64_t *req);
int sdd_rdma_read_start(sdd_client *c, uint64_t conn, int fd, uint64_t off,
			const struct sdd_descriptor *d, int n, uint64_t *req);
int64_t sdd_wait(sdd_client *c, uint64_t req);

/* sdd_send sends one PDU (no 4-byte header), with Send with Invalidate of
 * token invalidate unless it is 0. */
int sdd_send(sdd_client *c, uint64_t conn, const void *pdu, size_t len, uint32_t invalidate);

/* Helpers for the stream: whole PDUs with their Direct TCP header.
 * sdd_read_pdu returns the PDU length, or -1 (errno EMSGSIZE if it does
 * not fit cap; 0 with errno 0 at EOF). */
int sdd_write_pdu(int fd, const void *pdu, size_t len);
ssize_t sdd_read_pdu(int fd, void *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
