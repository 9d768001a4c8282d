//go:build !unix

package client

import (
	"errors"
	"fmt"
	"os"
	"runtime"
)

// errNoFDPassing: the daemon protocol passes fds over a unix socket
// (SCM_RIGHTS), which this system lacks (Windows' AF_UNIX has no fd
// passing). The package builds, so portable programs can link it, and
// Dial says so; errors.Is(err, errors.ErrUnsupported) holds.
var errNoFDPassing = fmt.Errorf("smbdirectd: %w on %s: the daemon protocol passes fds over unix sockets", errors.ErrUnsupported, runtime.GOOS)

func fdPassing() error { return errNoFDPassing }

// The rest is never reached: there is no Client without Dial.

func rightsSpace(int) int                     { return 0 }
func unixRights([]int) []byte                 { return nil }
func parseRights([]byte) []int                { return nil }
func closeFD(int)                             {}
func mapShared(*os.File, int) ([]byte, error) { return nil, errNoFDPassing }
func unmap([]byte) error                      { return errNoFDPassing }
func memfd(int) (*os.File, error)             { return nil, errNoFDPassing }
