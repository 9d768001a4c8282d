//go:build !unix

package smbd

import (
	"errors"
	"os"
)

// mmapFiles is off: without mmap, RegisterFile copies the file range (see
// RegisterFile).
var mmapFiles = false

func mmap(*os.File, int64, int, bool) ([]byte, error) { return nil, errors.ErrUnsupported }

func munmap([]byte) error { return errors.ErrUnsupported }
