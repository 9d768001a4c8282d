//go:build unix && !linux

package client

import "os"

// memfd returns an anonymous shared file of n bytes for a registration:
// without memfd_create, an unlinked temporary file.
func memfd(n int) (*os.File, error) { return unlinkedTemp(n) }
