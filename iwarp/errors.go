package iwarp

import (
	"errors"
	"fmt"

	"github.com/smbdirect/smbdirect/iwarp/internal/wire"
	"github.com/smbdirect/smbdirect/rdma"
)

// TerminateError reports an RDMAP Terminate, sent or received. It matches
// the rdma sentinel that fits its layer and code (ErrRemoteAccess for
// protection errors, ErrProtocol for framing errors, ...).
type TerminateError struct {
	// Received is true when the peer sent the Terminate, false when we did.
	Received bool
	// Layer (0 RDMAP, 1 DDP, 2 MPA), error Type and Code as on the wire.
	Layer, Type, Code uint8
	// Reason is our local description, when we sent it.
	Reason string
}

func (e *TerminateError) Error() string {
	dir := "sent"
	if e.Received {
		dir = "received"
	}
	t := wire.Terminate{Layer: e.Layer, Type: e.Type, Code: e.Code}
	s := fmt.Sprintf("iwarp: Terminate %s: %s", dir, t.String())
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// Is maps the Terminate onto the rdma sentinels.
func (e *TerminateError) Is(target error) bool {
	switch target {
	case rdma.ErrRemoteAccess:
		return e.Received && e.isAccess()
	case rdma.ErrRemoteOperation:
		return e.Received && !e.isAccess()
	case rdma.ErrProtocol:
		return !e.Received
	}
	return false
}

func (e *TerminateError) isAccess() bool {
	return (e.Layer == wire.LayerRDMAP && e.Type == wire.RDMAPTypeProtection) ||
		(e.Layer == wire.LayerDDP && e.Type == wire.DDPTypeTagged)
}

// Internal placement errors, turned into Terminates by the receiver.
var (
	errBounds = errors.New("base or bounds violation")
	errTOWrap = errors.New("tagged offset wraps")
)
