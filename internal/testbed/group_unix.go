//go:build unix

package testbed

import (
	"os"
	"os/exec"
	"syscall"
)

// ownGroup starts cmd in its own process group, so killGroup reaches
// run-vm.sh, timeout, qemu and tee at once.
func ownGroup(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} }

func killGroup(p *os.Process) { syscall.Kill(-p.Pid, syscall.SIGKILL) }
