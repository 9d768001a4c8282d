//go:build !linux

package iwarp

import "net"

// rawWriter is the inline send path's non-blocking writev, which only the
// Linux build has (raw_linux.go). Elsewhere newRawWriter returns nil and
// every send goes through the transmit loop, as for a conn that is not a
// socket.
type rawWriter struct{}

var rawWrites = false

func newRawWriter(net.Conn) *rawWriter { return nil }

func (*rawWriter) writev([][]byte) (int, error) { panic("iwarp: no raw writer on this system") }
