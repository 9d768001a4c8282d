//go:build !unix

package iwarp

import "errors"

// rawReads is off where a read inside the socket's read callback would
// not be non-blocking (Windows sockets are overlapped, not non-blocking):
// there the receive path makes blocking conn.Reads, on the endpoint's
// goroutine only, and Drive declines (returns false), as for a conn that is
// not a socket.
var rawReads = false

func readFD(int, []byte) (int, error) {
	return 0, errors.New("iwarp: raw socket reads are not used on this system")
}

type iovPair = struct{}

func readvFD(int, *iovPair, []byte, []byte) (int, error) {
	return 0, errors.New("iwarp: raw socket reads are not used on this system")
}
