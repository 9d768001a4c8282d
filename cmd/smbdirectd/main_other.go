//go:build !linux

// Command smbdirectd is the SMB Direct daemon; it runs on Linux only (see
// main.go). Elsewhere it says so and exits.
package main

import (
	"fmt"
	"os"
	"runtime"
)

func main() {
	fmt.Fprintf(os.Stderr, "smbdirectd: not supported on %s: the daemon runs on Linux only\n", runtime.GOOS)
	os.Exit(1)
}
