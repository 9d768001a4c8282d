//go:build linux

package server

import (
	"context"
	"fmt"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/smbdirect/smbdirect/rdma"
	"github.com/smbdirect/smbdirect/smbd"
)

// TestDialCode: each kind of dial failure gets its own errno.
func TestDialCode(t *testing.T) {
	op := func(e error) error {
		return fmt.Errorf("smbd: connecting to x: %w", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", e)})
	}
	for _, c := range []struct {
		name string
		err  error
		want unix.Errno
	}{
		{"no such host", &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "nohost", IsNotFound: true}}, unix.ENXIO},
		{"dns timeout", &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "timeout", Name: "slow", IsTimeout: true}}, unix.ETIMEDOUT},
		{"missing port", &net.OpError{Op: "dial", Net: "tcp", Err: &net.AddrError{Err: "missing port in address", Addr: "host"}}, unix.EINVAL},
		{"refused", op(unix.ECONNREFUSED), unix.ECONNREFUSED},
		{"host unreachable", op(unix.EHOSTUNREACH), unix.EHOSTUNREACH},
		{"network unreachable", op(unix.ENETUNREACH), unix.ENETUNREACH},
		{"reset", op(unix.ECONNRESET), unix.ECONNRESET},
		{"tcp timeout", op(unix.ETIMEDOUT), unix.ETIMEDOUT},
		{"context deadline", fmt.Errorf("smbd: connecting: iwarp: reading MPA reply: %w", context.DeadlineExceeded), unix.ETIMEDOUT},
		{"conn deadline", fmt.Errorf("iwarp: reading MPA reply: %w", os.ErrDeadlineExceeded), unix.ETIMEDOUT},
		{"mpa reject", fmt.Errorf("smbd: connecting: %w", &rdma.RejectError{}), unix.ECONNREFUSED},
		{"negotiation", fmt.Errorf("%w: bad response", smbd.ErrNegotiate), unix.ECONNREFUSED},
	} {
		if got := dialCode(c.err); got != uint32(c.want) {
			t.Errorf("%s (%v): code %d (%v), want %d (%v)", c.name, c.err, got, unix.Errno(got), uint32(c.want), c.want)
		}
	}
}
