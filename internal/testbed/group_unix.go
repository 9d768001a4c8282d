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

// tryLock takes an exclusive flock on f without waiting; busy reports
// that another holder has it.
func tryLock(f *os.File) (busy bool, err error) {
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if err == syscall.EWOULDBLOCK {
		return true, nil
	}
	return false, err
}
