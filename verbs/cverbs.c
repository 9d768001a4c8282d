//go:build linux && cgo && verbs

#include "cverbs.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

// Returns 0 or an errno: the Go side reads errno values from these
// functions' results, never from errno after the call.

int vb_set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return errno;
	return 0;
}

int vb_post_send(struct ibv_qp *qp, uint64_t wr_id, int op, uint64_t addr, uint32_t len, uint32_t lkey,
                 uint32_t rkey, uint64_t raddr, uint32_t inv, int flags)
{
	struct ibv_sge sge = {.addr = addr, .length = len, .lkey = lkey};
	struct ibv_send_wr wr, *bad = NULL;
	memset(&wr, 0, sizeof wr);
	wr.wr_id = wr_id;
	if (len > 0) {
		wr.sg_list = &sge;
		wr.num_sge = 1;
	}
	if (flags & VB_F_SIGNALED)
		wr.send_flags |= IBV_SEND_SIGNALED;
	if (flags & VB_F_SOLICITED)
		wr.send_flags |= IBV_SEND_SOLICITED;
	switch (op) {
	case VB_SEND:
		wr.opcode = IBV_WR_SEND;
		break;
	case VB_SEND_INV:
		wr.opcode = IBV_WR_SEND_WITH_INV;
		wr.invalidate_rkey = inv;
		break;
	case VB_WRITE:
		wr.opcode = IBV_WR_RDMA_WRITE;
		wr.wr.rdma.remote_addr = raddr;
		wr.wr.rdma.rkey = rkey;
		break;
	case VB_READ:
		wr.opcode = IBV_WR_RDMA_READ;
		wr.wr.rdma.remote_addr = raddr;
		wr.wr.rdma.rkey = rkey;
		break;
	case VB_LOCAL_INV:
		wr.opcode = IBV_WR_LOCAL_INV;
		wr.invalidate_rkey = inv;
		break;
	default:
		return EINVAL;
	}
	return ibv_post_send(qp, &wr, &bad);
}

int vb_post_recv(struct ibv_qp *qp, uint64_t wr_id, uint64_t addr, uint32_t len, uint32_t lkey)
{
	struct ibv_sge sge = {.addr = addr, .length = len, .lkey = lkey};
	struct ibv_recv_wr wr, *bad = NULL;
	memset(&wr, 0, sizeof wr);
	wr.wr_id = wr_id;
	wr.sg_list = &sge;
	wr.num_sge = 1;
	return ibv_post_recv(qp, &wr, &bad);
}

// Polls up to n completions (at most 32) into out; returns how many, or a
// negative value when polling failed.
int vb_poll(struct ibv_cq *cq, struct vb_wc *out, int n)
{
	struct ibv_wc wc[32];
	int i, got;
	if (n > 32)
		n = 32;
	got = ibv_poll_cq(cq, n, wc);
	for (i = 0; i < got; i++) {
		out[i].wr_id = wc[i].wr_id;
		out[i].status = wc[i].status;
		out[i].opcode = wc[i].opcode;
		out[i].byte_len = wc[i].byte_len;
		out[i].vendor_err = wc[i].vendor_err;
		out[i].invalidated = (wc[i].wc_flags & IBV_WC_WITH_INV) ? 1 : 0;
		out[i].rkey = out[i].invalidated ? wc[i].invalidated_rkey : 0;
	}
	return got;
}

// Takes every pending completion event off the channel (its fd is
// non-blocking), acknowledges them and arms the CQ for the next one. The
// caller polls the CQ afterwards, so a completion that came in before the
// arming is not missed. Returns 0 or an errno.
int vb_cq_rearm(struct ibv_comp_channel *ch, struct ibv_cq *cq)
{
	struct ibv_cq *ecq;
	void *ctx;
	unsigned int n = 0;
	while (ibv_get_cq_event(ch, &ecq, &ctx) == 0)
		n++;
	if (errno != EAGAIN && errno != EWOULDBLOCK)
		return errno ? errno : EIO;
	if (n)
		ibv_ack_cq_events(cq, n);
	return ibv_req_notify_cq(cq, 0);
}

int vb_get_event(struct rdma_event_channel *ch, struct vb_event *out)
{
	struct rdma_cm_event *ev;
	if (rdma_get_cm_event(ch, &ev) != 0)
		return errno ? errno : EIO;
	memset(out, 0, sizeof *out);
	out->type = ev->event;
	out->status = ev->status;
	out->id = ev->id;
	out->listen_id = ev->listen_id;
	if (ev->id && ev->id->qp_type != IBV_QPT_UD) {
		const struct rdma_conn_param *p = &ev->param.conn;
		out->responder_resources = p->responder_resources;
		out->initiator_depth = p->initiator_depth;
		if (p->private_data && p->private_data_len) {
			out->private_data_len = p->private_data_len;
			memcpy(out->private_data, p->private_data, p->private_data_len);
		}
	}
	rdma_ack_cm_event(ev);
	return 0;
}

struct ibv_qp *vb_create_qp(struct rdma_cm_id *id, struct ibv_pd *pd, struct ibv_cq *cq, uint32_t sq, uint32_t rq)
{
	struct ibv_qp_init_attr attr;
	memset(&attr, 0, sizeof attr);
	attr.send_cq = cq;
	attr.recv_cq = cq;
	attr.qp_type = IBV_QPT_RC;
	attr.sq_sig_all = 0;
	attr.cap.max_send_wr = sq;
	attr.cap.max_recv_wr = rq;
	attr.cap.max_send_sge = 1;
	attr.cap.max_recv_sge = 1;
	if (rdma_create_qp(id, pd, &attr) != 0)
		return NULL;
	return id->qp;
}

int vb_connect(struct rdma_cm_id *id, const void *pd, uint8_t pdlen, uint8_t rr, uint8_t id_, int accept)
{
	struct rdma_conn_param p;
	int rc;
	memset(&p, 0, sizeof p);
	p.private_data = pd;
	p.private_data_len = pdlen;
	p.responder_resources = rr;
	p.initiator_depth = id_;
	p.retry_count = 7;
	// 6, not 7 (infinite): a peer that never posts a receive is an error
	// after the retries (RNR retry exceeded), not a hang.
	p.rnr_retry_count = 6;
	rc = accept ? rdma_accept(id, &p) : rdma_connect(id, &p);
	return rc ? (errno ? errno : EIO) : 0;
}

static int lookup(const char *host, const char *port, int passive, struct addrinfo **ai)
{
	struct addrinfo hints;
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
	if (host && !*host)
		host = NULL;
	return getaddrinfo(host, port, &hints, ai) ? EADDRNOTAVAIL : 0;
}

int vb_resolve(struct rdma_cm_id *id, const char *host, const char *port, int timeout_ms)
{
	struct addrinfo *ai;
	int rc = lookup(host, port, 0, &ai);
	if (rc)
		return rc;
	rc = rdma_resolve_addr(id, NULL, ai->ai_addr, timeout_ms) ? (errno ? errno : EIO) : 0;
	freeaddrinfo(ai);
	return rc;
}

int vb_bind(struct rdma_cm_id *id, const char *host, const char *port)
{
	struct addrinfo *ai;
	int rc = lookup(host, port, 1, &ai);
	if (rc)
		return rc;
	rc = rdma_bind_addr(id, ai->ai_addr) ? (errno ? errno : EIO) : 0;
	freeaddrinfo(ai);
	return rc;
}

// Formats the local (peer 0) or remote address of id as host:port; IPv6
// hosts in brackets.
int vb_addr(struct rdma_cm_id *id, int peer, char *buf, int len)
{
	struct sockaddr *sa = peer ? rdma_get_peer_addr(id) : rdma_get_local_addr(id);
	char host[NI_MAXHOST], serv[NI_MAXSERV];
	socklen_t sl = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	if (getnameinfo(sa, sl, host, sizeof host, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) != 0)
		return EINVAL;
	snprintf(buf, len, sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, serv);
	return 0;
}

struct ibv_mr *vb_reg_mr(struct ibv_pd *pd, uint64_t addr, uint64_t len, int access)
{
	return ibv_reg_mr(pd, (void *)(uintptr_t)addr, len, access);
}

const char *vb_dev_name(struct ibv_context *ctx)
{
	return ibv_get_device_name(ctx->device);
}

int vb_query(struct ibv_context *ctx, int *max_rd_init, int *max_rd_resp, int *max_qp_wr, int *transport)
{
	struct ibv_device_attr a;
	int rc = ibv_query_device(ctx, &a);
	if (rc)
		return rc;
	*max_rd_init = a.max_qp_init_rd_atom;
	*max_rd_resp = a.max_qp_rd_atom;
	*max_qp_wr = a.max_qp_wr;
	*transport = ctx->device->transport_type;
	return 0;
}
