package iwarp

import (
	"testing"

	"github.com/smbdirect/smbdirect/rdma"
	"github.com/smbdirect/smbdirect/rdma/rdmatest"
)

// TestConformance runs the provider-neutral semantics that the in-memory
// provider of rdma/rdmatest runs too, so the two stay interchangeable for
// the code above them.
func TestConformance(t *testing.T) {
	rdmatest.TestProvider(t, rdmatest.Harness{
		Provider:   func(*testing.T) rdma.Provider { return New(Config{FirstSendDelay: -1}) },
		ListenAddr: "127.0.0.1:0",
	})
}
