package smbd

import (
	"runtime"
	"testing"
)

// idleConnMemory opens n connection pairs, lets them settle, and returns
// the heap and stack memory each connection (one end) holds.
func idleConnMemory(t *testing.T, n int) (heap, stack int) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	conns := make([]*Conn, 0, 2*n)
	for range n {
		c, s := pair(t, testConfig(), testConfig())
		conns = append(conns, c, s)
	}
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(conns)
	k := 2 * n
	return int(after.HeapAlloc-before.HeapAlloc) / k, int(after.StackInuse-before.StackInuse) / k
}

// TestIdleConnMemory holds an idle connection to the budget of
// 128 KiB, heap and goroutine stacks together.
func TestIdleConnMemory(t *testing.T) {
	// The first batch in a process also pays one-time growth (about
	// 17 KiB a connection under -race: runtime and pool structures), which
	// is not what an idle connection holds: measure a second batch.
	t.Run("warm-up", func(t *testing.T) { idleConnMemory(t, 20) })
	heap, stack := idleConnMemory(t, 20)
	t.Logf("idle connection: %d KiB heap + %d KiB stacks = %d KiB", heap>>10, stack>>10, (heap+stack)>>10)
	if heap+stack > 128<<10 {
		t.Errorf("an idle connection holds %d KiB, budget 128 KiB", (heap+stack)>>10)
	}
}
