//go:build unix

// Package cputime reads what this process has cost in CPU, for the
// benchmarks and measurements that report CPU per byte next to time.
package cputime

import (
	"syscall"
	"time"
)

// Process is this process's user plus system CPU time so far, false where
// it cannot be read. Only its own threads count (RUSAGE_SELF): a child,
// such as the testbed VM's qemu, is not in it.
func Process() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
