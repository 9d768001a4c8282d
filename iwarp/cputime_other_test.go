//go:build !unix

package iwarp

import "time"

func cpuTime() (time.Duration, bool) { return 0, false }
