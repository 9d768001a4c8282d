//go:build linux && cgo && verbs

// The thin C data path under package verbs: each function is one coarse
// step (post a work request, poll a batch of completions, take one
// connection manager event), so a Go call crosses into C once per step and
// passes scalars only.
#ifndef SMBDIRECT_CVERBS_H
#define SMBDIRECT_CVERBS_H

#include <stdint.h>
#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

// Work request kinds of vb_post_send (rdma.Opcode values).
enum {
	VB_SEND = 1,
	VB_SEND_INV = 2,
	VB_WRITE = 3,
	VB_READ = 4,
	VB_LOCAL_INV = 5,
};

enum {
	VB_F_SIGNALED = 1,
	VB_F_SOLICITED = 2,
};

// A completion reduced to what the rdma API reports.
struct vb_wc {
	uint64_t wr_id;
	uint32_t status;
	uint32_t opcode;
	uint32_t byte_len;
	uint32_t invalidated; // 1 when rkey below was invalidated by the peer's Send with Invalidate
	uint32_t rkey;
	uint32_t vendor_err;
};

// A connection manager event, copied out before it is acknowledged.
struct vb_event {
	int type;
	int status;
	struct rdma_cm_id *id;
	struct rdma_cm_id *listen_id;
	uint8_t responder_resources;
	uint8_t initiator_depth;
	uint8_t private_data_len;
	uint8_t private_data[256];
};

int vb_set_nonblock(int fd);
int vb_post_send(struct ibv_qp *qp, uint64_t wr_id, int op, uint64_t addr, uint32_t len, uint32_t lkey,
                 uint32_t rkey, uint64_t raddr, uint32_t inv, int flags);
int vb_post_recv(struct ibv_qp *qp, uint64_t wr_id, uint64_t addr, uint32_t len, uint32_t lkey);
int vb_poll(struct ibv_cq *cq, struct vb_wc *out, int n);
int vb_cq_rearm(struct ibv_comp_channel *ch, struct ibv_cq *cq);
int vb_get_event(struct rdma_event_channel *ch, struct vb_event *out);
struct ibv_qp *vb_create_qp(struct rdma_cm_id *id, struct ibv_pd *pd, struct ibv_cq *cq, uint32_t sq, uint32_t rq);
int vb_connect(struct rdma_cm_id *id, const void *pd, uint8_t pdlen, uint8_t rr, uint8_t id_, int accept);
int vb_resolve(struct rdma_cm_id *id, const char *host, const char *port, int timeout_ms);
int vb_bind(struct rdma_cm_id *id, const char *host, const char *port);
int vb_addr(struct rdma_cm_id *id, int peer, char *buf, int len);
struct ibv_mr *vb_reg_mr(struct ibv_pd *pd, uint64_t addr, uint64_t len, int access);
const char *vb_dev_name(struct ibv_context *ctx);
int vb_query(struct ibv_context *ctx, int *max_rd_init, int *max_rd_resp, int *max_qp_wr, int *transport);

#endif
