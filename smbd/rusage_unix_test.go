//go:build unix

package smbd_test

import (
	"bytes"
	"os"
	"strconv"
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

// readCalls is how many read system calls this process made so far and
// how many bytes they returned (Linux's /proc/self/io; zeros elsewhere).
func readCalls() (calls, bytes int64) {
	b, _ := os.ReadFile("/proc/self/io")
	return procField(b, "syscr"), procField(b, "rchar")
}

func procField(b []byte, name string) int64 {
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte(name+": ")); ok {
			n, _ := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			return n
		}
	}
	return 0
}
