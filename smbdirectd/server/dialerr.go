//go:build linux

package server

import (
	"context"
	"errors"
	"net"
	"os"

	"golang.org/x/sys/unix"

	"github.com/smbdirect/smbdirect/internal/ctl"
)

// dialCode is the errno a failed Dial reports, so a C client's errno says
// what went wrong rather than ECONNREFUSED for everything.
func dialCode(err error) uint32 {
	var dns *net.DNSError
	var addr *net.AddrError
	var errno unix.Errno
	switch {
	// Checked first: a timed-out DNS lookup or TCP connect is a timeout.
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, unix.ETIMEDOUT):
		return ctl.CodeTimeout
	case errors.As(err, &dns):
		if dns.IsTimeout {
			return ctl.CodeTimeout
		}
		return ctl.CodeNoHost
	case errors.As(err, &addr):
		return ctl.CodeInvalid // "host" without a port, a bad port, ...
	case errors.Is(err, unix.EHOSTUNREACH), errors.Is(err, unix.EHOSTDOWN):
		return ctl.CodeHostUnreach
	case errors.Is(err, unix.ENETUNREACH), errors.Is(err, unix.ENETDOWN):
		return ctl.CodeNetUnreach
	case errors.As(err, &errno) && errno != 0:
		return uint32(errno) // ECONNREFUSED, ECONNRESET, EADDRNOTAVAIL, ...
	}
	// The peer answered but refused the MPA or SMB Direct negotiation.
	return ctl.CodeConnRefused
}
