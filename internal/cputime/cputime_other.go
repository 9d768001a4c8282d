//go:build !unix

// Package cputime reads what this process has cost in CPU, for the
// benchmarks and measurements that report CPU per byte next to time.
package cputime

import "time"

// Process is this process's user plus system CPU time so far; false: it
// is not read on this system.
func Process() (time.Duration, bool) { return 0, false }
