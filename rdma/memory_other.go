//go:build !unix

package rdma

// Without mmap the Go heap is the only memory; the providers of these
// platforms (pure Go) accept it.
func allocMemory(n int) ([]byte, error) { return make([]byte, n), nil }

func freeMemory([]byte) error { return nil }
