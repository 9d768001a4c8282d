//go:build !linux

package iwarp

import "time"

func cpuTime(thread bool) (time.Duration, bool) { return 0, false }
