//go:build unix

package smbd_test

import (
	"syscall"
	"time"
)

// processCPU is this process's user and system CPU time so far. Only its
// own threads count (RUSAGE_SELF): the VM's qemu, a child, is not in it.
func processCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
