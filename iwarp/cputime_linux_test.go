package iwarp

import (
	"syscall"
	"time"
)

// rusageThread is Linux's RUSAGE_THREAD, which package syscall does not name.
const rusageThread = 1

// cpuTime is the user plus system CPU time of the calling thread
// (thread) or of the process so far.
func cpuTime(thread bool) (time.Duration, bool) {
	who := syscall.RUSAGE_SELF
	if thread {
		who = rusageThread
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
