// Package leakcheck fails a test that leaves goroutines behind.
package leakcheck

import (
	"runtime"
	"testing"
	"time"
)

// Check records the goroutine count now and, at the end of t, waits up
// to 3 s for it to come back, then fails t with every stack if it has not.
func Check(t testing.TB) {
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > base {
			buf := make([]byte, 1<<16)
			t.Errorf("%d goroutines left, %d before:\n%s", n, base, buf[:runtime.Stack(buf, true)])
		}
	})
}
