// Package verbs is an rdma provider over the kernel's verbs through
// rdma-core (libibverbs and librdmacm): soft-RoCE (rxe), kernel soft-iWARP
// (siw) and RDMA NICs.
//
// It needs cgo and is built only with the build tag verbs on Linux:
//
//	apt-get install libibverbs-dev librdmacm-dev   # Debian/Ubuntu
//	go build -tags verbs ./...
//
// In every other build New returns a provider whose NewPD fails with
// ErrNotBuilt, saying how to build it, so a program can offer
// --provider verbs and explain rather than fail to link.
//
// Memory to register should come from rdma.AllocMemory (see its rule);
// Go heap memory is accepted and kept referenced while registered.
//
// Completions are waited for on the completion channel's file descriptor
// in Go's netpoller and connection events on the rdma_cm event channel's,
// so no goroutine busy-polls and no OS thread is held per queue pair.
package verbs

import (
	"errors"
	"log/slog"
)

// Name is the provider's name in rdma's registry and in --provider.
const Name = "verbs"

// ErrNotBuilt: this binary was built without the verbs provider.
var ErrNotBuilt = errors.New("verbs: this binary was built without the verbs provider: install libibverbs-dev and librdmacm-dev and build with CGO_ENABLED=1 go build -tags verbs")

// Config configures the provider.
type Config struct {
	// Device is the RDMA device's name (as ibv_devices lists it, e.g.
	// rxe0 or siw0). Empty means: the device Route leads to, else the only
	// device there is.
	Device string
	// Route, if set and Device is empty, picks the device through
	// rdma_cm: the one owning this local IP address, or the one the route
	// to this remote address leaves through.
	Route string
	// Logger receives provider events; nil discards them.
	Logger *slog.Logger
}
