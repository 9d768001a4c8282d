//go:build unix

package testbed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestExitCode(t *testing.T) {
	for _, c := range []struct {
		out  string
		want int
	}{
		{"", -1},
		{"boot\nGUEST_EXIT=0\n[ 1.5] reboot: Restarting system\n", 0},
		{"GUEST_EXIT=3", 3},
		{"echo GUEST_EXIT=1 from a script\nGUEST_EXIT=0\n", 0}, // only whole lines count
		{"GUEST_EXIT=1\nGUEST_EXIT=2\n", 2},
		{"GUEST_EXIT=\n", -1},
	} {
		if got := exitCode([]byte(c.out)); got != c.want {
			t.Errorf("exitCode(%q) = %d, want %d", c.out, got, c.want)
		}
	}
}

func TestListenHost(t *testing.T) {
	l, port, err := ListenHost()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := l.Addr().String(); got != fmt.Sprintf("127.0.0.1:%d", port) {
		t.Fatalf("listening on %s, port %d", got, port)
	}
	p, err := FreePort()
	if err != nil || p == 0 || p == port {
		t.Fatalf("FreePort() = %d, %v", p, err)
	}
}

// TestVMBoots runs siw against siw inside the guest with rdma-core's rping.
func TestVMBoots(t *testing.T) {
	vm := StartT(t, Options{GuestScript: `
rdma link add siw0 type siw netdev eth0 && rping -s -a 10.0.2.15 -p 7174 -C 3 -v & sleep 1
rping -c -a 10.0.2.15 -p 7174 -C 3 -v -V; st=$?
wait  # the server's output too
exit $st
`})
	res, err := vm.Wait()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		// Printed by the server ("server ping data: ...") and by the client ("ping data: ...").
		if want := fmt.Sprintf("ping data: rdma-ping-%d: ", i); strings.Count(res.Output, want) != 2 {
			t.Errorf("console has %d lines with %q, want 2 (server and client)", strings.Count(res.Output, want), want)
		}
	}
	if res.ExitCode != 0 {
		t.Errorf("GUEST_EXIT=%d, want 0", res.ExitCode)
	}
	if t.Failed() {
		t.Logf("console:\n%s", res.Output)
	}
}

// TestVMNetwork checks both directions of the user-mode network: the guest reaching a host listener as
// 10.0.2.2, and the host reaching a guest listener through a forward; WaitFor tells when the guest listens.
func TestVMNetwork(t *testing.T) {
	l, port, err := ListenHost()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	vm := StartT(t, Options{
		Forwards: []Forward{{GuestPort: 7000}},
		GuestScript: fmt.Sprintf(`
echo from-guest | nc %s %d || exit 1
nc -l -p 7000 > /tmp/got &
while ! netstat -ltn | grep -q ':7000 '; do sleep 0.1; done
echo LISTENING
wait
cat /tmp/got
`, HostIP, port),
	})
	if vm.HostPort(7000) == 0 || vm.HostPort(7001) != 0 {
		t.Fatalf("HostPort(7000) = %d, HostPort(7001) = %d", vm.HostPort(7000), vm.HostPort(7001))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	l.(*net.TCPListener).SetDeadline(time.Now().Add(60 * time.Second))
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if line != "from-guest\n" {
		t.Fatalf("host listener read %q, %v", line, err)
	}

	if _, err := vm.WaitFor(ctx, "LISTENING"); err != nil {
		t.Fatal(err)
	}
	c, err = net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", vm.HostPort(7000)))
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "from-host\n")
	c.Close()
	res, err := vm.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 || !strings.Contains(res.Output, "\nfrom-host\n") {
		t.Fatalf("GUEST_EXIT=%d; console:\n%s", res.ExitCode, res.Output)
	}
}

// TestVMKillAndTimeout checks that Kill and the timeout end qemu's whole process group.
func TestVMKillAndTimeout(t *testing.T) {
	vm := StartT(t, Options{GuestScript: "echo STARTED; sleep 600"})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if _, err := vm.WaitFor(ctx, "STARTED"); err != nil {
		t.Fatal(err)
	}
	vm.Kill()
	if _, err := vm.Wait(); !errors.Is(err, ErrKilled) {
		t.Errorf("Wait after Kill: %v, want ErrKilled", err)
	}
	if err := groupGone(vm); err != nil {
		t.Errorf("after Kill: %v", err)
	}
	if _, err := vm.WaitFor(ctx, "never printed"); err == nil {
		t.Error("WaitFor on an ended VM succeeded")
	}

	vm = StartT(t, Options{GuestScript: "sleep 600", Timeout: 10 * time.Second})
	if _, err := vm.Wait(); !errors.Is(err, ErrTimeout) {
		t.Errorf("Wait: %v, want ErrTimeout", err)
	}
	if err := groupGone(vm); err != nil {
		t.Errorf("after the timeout: %v", err)
	}
}

// groupGone waits a little for the VM's process group to disappear: qemu and tee, orphaned when
// run-vm.sh was killed, stay zombies until init reaps them.
func groupGone(vm *VM) error {
	var err error
	for range 50 {
		if err = syscall.Kill(-vm.cmd.Process.Pid, 0); errors.Is(err, syscall.ESRCH) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("process group %d still there after 5 s (kill 0: %v)", vm.cmd.Process.Pid, err)
}

// TestLockHostPort: the lock excludes every other holder while the test holding it runs, waits for one
// that holds it, and is free again once the holder's test has ended.
func TestLockHostPort(t *testing.T) {
	// Not a real port: a number of this process's own, so that neither a VM test nor this test run by
	// another process on the machine holds the same lock.
	port := 1<<20 + os.Getpid()
	t.Cleanup(func() { os.Remove(portLockName(port)) })
	tryLock := func() error {
		f, err := os.Open(portLockName(port))
		if err != nil {
			return err
		}
		defer f.Close()
		return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	}
	t.Run("held", func(t *testing.T) {
		LockHostPort(t, port)
		if err := tryLock(); !errors.Is(err, syscall.EWOULDBLOCK) {
			t.Fatalf("second holder while held: %v, want EWOULDBLOCK", err)
		}
	})
	if err := tryLock(); err != nil {
		t.Fatalf("after the holder ended: %v", err)
	}

	// Another holder (another process's open file) for 300 ms: LockHostPort waits it out.
	f, err := os.Open(portLockName(port))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	released := make(chan time.Time, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		released <- time.Now()
		f.Close()
	}()
	t.Run("waits", func(t *testing.T) {
		LockHostPort(t, port)
		got := time.Now()
		if r := <-released; got.Before(r) {
			t.Fatalf("took the lock at %v, before the other holder let go at %v", got, r)
		}
	})
}

// TestWaitForWholeLine: a marker whose line has not fully arrived is returned only once its newline has
// (a console chunk can end mid-line; a test comparing the line saw it cut), or as it is once the VM ended.
func TestWaitForWholeLine(t *testing.T) {
	vm := &VM{changed: make(chan struct{})}
	add := func(s string, end bool) {
		vm.mu.Lock()
		vm.out = append(vm.out, s...)
		vm.ended = end
		close(vm.changed)
		vm.changed = make(chan struct{})
		vm.mu.Unlock()
	}
	add("boot\nSTATUS ", false)
	got := make(chan string, 1)
	go func() {
		line, err := vm.WaitFor(t.Context(), "STATUS")
		if err != nil {
			line = err.Error()
		}
		got <- line
	}()
	select {
	case l := <-got:
		t.Fatalf("WaitFor returned %q before the line ended", l)
	case <-time.After(50 * time.Millisecond):
	}
	add("0", false)
	add(" done\nmore", false)
	if l := <-got; l != "STATUS 0 done" {
		t.Fatalf("WaitFor = %q, want %q", l, "STATUS 0 done")
	}
	add(" LAST 1", true)
	if l, err := vm.WaitFor(t.Context(), "LAST"); err != nil || l != "more LAST 1" {
		t.Fatalf("WaitFor after the end = %q, %v; want the unterminated last line", l, err)
	}
}
