//go:build unix

package iwarp

import "syscall"

// rawReads: the receive path may read the socket itself inside its read
// callback, where Go's sockets are non-blocking (EAGAIN when empty). The
// tests of the portable path turn it off.
var rawReads = true

func readFD(fd int, p []byte) (int, error) { return syscall.Read(fd, p) }
