package rdma

import (
	"errors"
	"fmt"
)

// Sentinel errors. Provider errors wrap these, so callers test with errors.Is.
var (
	// ErrClosed: the endpoint, listener or PD was closed locally.
	ErrClosed = errors.New("rdma: closed")
	// ErrDisconnected: the peer ended the connection.
	ErrDisconnected = errors.New("rdma: disconnected by peer")
	// ErrNotConnected: work was posted on an endpoint that is not connected
	// (and not being connected).
	ErrNotConnected = errors.New("rdma: endpoint not connected")
	// ErrFlushed: the work request was flushed because the connection ended
	// before it completed.
	ErrFlushed = errors.New("rdma: work request flushed")
	// ErrQueueFull: the send or receive queue is full.
	ErrQueueFull = errors.New("rdma: queue full")
	// ErrInvalidArgument: a work request or parameter is malformed
	// (bad SGE bounds, unknown opcode, missing rights for a local access).
	ErrInvalidArgument = errors.New("rdma: invalid argument")
	// ErrLocalProtection: a local SGE names an invalid region or one
	// without the needed rights.
	ErrLocalProtection = errors.New("rdma: local protection error")
	// ErrLocalLength: an incoming message did not fit the posted receive.
	ErrLocalLength = errors.New("rdma: local length error")
	// ErrRemoteAccess: the peer refused our access (STag unknown,
	// invalidated, out of bounds or without rights).
	ErrRemoteAccess = errors.New("rdma: remote access error")
	// ErrRemoteOperation: the peer failed our request for another reason.
	ErrRemoteOperation = errors.New("rdma: remote operation error")
	// ErrProtocol: the peer violated the wire protocol.
	ErrProtocol = errors.New("rdma: protocol error")
	// ErrRejected: the peer rejected the connection request.
	ErrRejected = errors.New("rdma: connection rejected")
	// ErrBusy: the object is still in use (a region referenced by posted work).
	ErrBusy = errors.New("rdma: busy")
	// ErrNotSupported: the provider does not support the feature.
	ErrNotSupported = errors.New("rdma: not supported")
)

// RejectError is returned by Connect when the peer rejects the request. It
// matches ErrRejected and carries the peer's private data.
type RejectError struct {
	PrivateData []byte
	Reason      string
}

func (e *RejectError) Error() string {
	if e.Reason != "" {
		return "rdma: connection rejected: " + e.Reason
	}
	return "rdma: connection rejected by peer"
}

// Is makes errors.Is(err, ErrRejected) true.
func (e *RejectError) Is(target error) bool { return target == ErrRejected }

// WorkError describes a failed work request in a Completion.Err.
type WorkError struct {
	Op  Opcode
	ID  uint64
	Err error // one of the sentinels, possibly wrapping detail
}

func (e *WorkError) Error() string {
	return fmt.Sprintf("rdma: %s (wr %d): %v", e.Op, e.ID, e.Err)
}

func (e *WorkError) Unwrap() error { return e.Err }
