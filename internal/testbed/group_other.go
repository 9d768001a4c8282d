//go:build !unix

package testbed

import (
	"errors"
	"os"
	"os/exec"
)

// The testbed runs on Linux hosts; elsewhere it only has to build (the
// tests that use it are skipped without SMBDIRECT_VM), so there is no
// process group: Kill ends the script alone.
func ownGroup(*exec.Cmd) {}

func killGroup(p *os.Process) { p.Kill() }

func tryLock(*os.File) (bool, error) { return false, errors.ErrUnsupported }
