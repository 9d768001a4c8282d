package rdma

import "fmt"

// Registrable memory.
//
// The rule: memory handed to PD.RegisterMemory should come from
// AllocMemory. Every provider accepts it. A kernel verbs device (the verbs
// provider) DMAs into registered memory after the registering call has
// returned, which cgo forbids for Go heap memory: C may not keep a Go
// pointer. AllocMemory's memory is mapped outside the Go heap, page-aligned
// (what the kernel pins), and never moved or reused by Go's collector.
//
// Go heap memory (make([]byte, n)) is still accepted by every provider so
// that existing callers work unchanged: the pure-Go iwarp provider never
// leaves Go, and the verbs provider keeps a reference for the region's
// lifetime (Go's collector does not move heap objects). New code that may
// run on verbs allocates with AllocMemory.

// AllocMemory returns n zeroed bytes of registrable memory: page-aligned
// and outside the Go heap where the platform maps anonymous memory (every
// Unix), from the Go heap elsewhere. Release it with FreeMemory once no
// region uses it.
func AllocMemory(n int) ([]byte, error) {
	if n <= 0 {
		return nil, fmt.Errorf("%w: AllocMemory of %d bytes", ErrInvalidArgument, n)
	}
	b, err := allocMemory(n)
	if err != nil {
		return nil, fmt.Errorf("rdma: allocating %d bytes of registrable memory: %w", n, err)
	}
	return b, nil
}

// FreeMemory releases memory from AllocMemory. b must be the slice
// AllocMemory returned, or a reslice of it starting at its first byte.
// Touching b afterwards faults.
func FreeMemory(b []byte) error {
	if b == nil {
		return nil
	}
	if err := freeMemory(b); err != nil {
		return fmt.Errorf("%w: FreeMemory: %v", ErrInvalidArgument, err)
	}
	return nil
}
