// Package testbed boots the project's small Linux VM (scripts/testbed: Linux 6.12 with siw, rxe, ksmbd and
// cifs.ko with SMB Direct, under qemu without KVM) so tests can talk to implementations nobody here wrote.
//
// A test hands Start a shell script; the guest runs it as /mnt/work/guest.sh and the VM ends when it does.
// The guest is 10.0.2.15 on qemu's user-mode network and reaches the host's loopback as 10.0.2.2, so a host
// listener on 127.0.0.1:P is 10.0.2.2:P to the guest (see ListenHost). Guest ports reach the host through
// forwards on 127.0.0.1 (Options.Forwards). No other address is involved.
//
// VM tests are opt-in: Require skips them unless SMBDIRECT_VM is set, and fails them (never skips) when it
// is set but the VM cannot run, so a CI run that asks for interop tests cannot pass without them.
package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Addresses on qemu's user-mode network.
const (
	// GuestIP is the guest's address.
	GuestIP = "10.0.2.15"
	// HostIP is the host's loopback as the guest sees it.
	HostIP = "10.0.2.2"
)

// EnvVar opts into the VM tests.
const EnvVar = "SMBDIRECT_VM"

// DefaultTimeout bounds a VM's life when Options.Timeout is zero. A boot takes about 3 s; the rest is for
// the guest script, which runs many times slower than on the host.
const DefaultTimeout = 120 * time.Second

// ErrTimeout is returned by Wait when the VM outlived Options.Timeout.
var ErrTimeout = errors.New("testbed: VM timed out")

// ErrKilled is returned by Wait when Kill ended the VM.
var ErrKilled = errors.New("testbed: VM killed")

// Forward makes the guest's TCP port GuestPort reachable at 127.0.0.1:HostPort.
type Forward struct {
	// HostPort 0 means pick a free port; VM.HostPort reports it.
	HostPort  int
	GuestPort int
}

// Options configures a VM.
type Options struct {
	// GuestScript is the shell script the guest runs (as /mnt/work/guest.sh); "#!/bin/sh" is prepended
	// when it has no interpreter line. Empty means ShareDir already holds an executable guest.sh.
	GuestScript string
	// Forwards are the guest ports to reach from the host.
	Forwards []Forward
	// ShareDir is shared with the guest as /mnt/work (for extra files in either direction); guest.sh is
	// written into it. Empty means a temporary directory, removed when the VM has ended.
	ShareDir string
	// Mem is the guest memory in MiB (default 1024) and CPUs its processor count (default 2).
	Mem, CPUs int
	// Timeout bounds the VM's life (default DefaultTimeout); qemu is killed when it runs out, even if
	// this process dies first.
	Timeout time.Duration
	// Log, if set, receives the console output as it arrives (carriage returns removed).
	Log io.Writer
}

// Result is what a VM left behind.
type Result struct {
	// Output is the console output (the guest's and qemu's), carriage returns removed.
	Output string
	// ExitCode is the guest script's status from its GUEST_EXIT line, -1 if there was none.
	ExitCode int
}

// VM is a running qemu guest.
type VM struct {
	cmd     *exec.Cmd
	share   string
	tmp     bool // share is ours to remove
	forward map[int]int
	log     io.Writer
	cancel  context.CancelFunc

	mu      sync.Mutex
	out     []byte
	changed chan struct{} // closed and replaced whenever out grows or the VM ends
	exiting bool          // the console hit EOF: every process of the group has let go of it, so nothing to kill
	ended   bool
	killed  bool
	err     error         // set when ended
	done    chan struct{} // closed when ended
}

// Enabled reports whether VM tests were asked for (SMBDIRECT_VM set, and not to 0).
func Enabled() bool {
	v := os.Getenv(EnvVar)
	return v != "" && v != "0"
}

// Require skips t unless VM tests are enabled, and fails it when they are but the testbed is not usable.
func Require(t testing.TB) {
	t.Helper()
	if !Enabled() {
		t.Skipf("boots the Linux VM: set %s=1 to run (after scripts/testbed/setup.sh)", EnvVar)
	}
	kernel, initrd, err := Paths()
	if err == nil {
		_, err = os.Stat(kernel)
	}
	if err == nil {
		_, err = os.Stat(initrd)
	}
	if err == nil {
		_, err = exec.LookPath("qemu-system-x86_64")
	}
	if err != nil {
		t.Fatalf("%s is set but the VM cannot run: %v", EnvVar, err)
	}
}

// StartT is Require plus Start for tests: the VM lives at most until t ends (it is killed in t's cleanup),
// and its console output is logged if t failed.
func StartT(t testing.TB, opts Options) *VM {
	t.Helper()
	Require(t)
	vm, err := Start(t.Context(), opts)
	if err != nil {
		t.Fatalf("starting the VM: %v", err)
	}
	t.Cleanup(func() {
		vm.Kill()
		if t.Failed() {
			t.Logf("VM console:\n%s", vm.Output())
		}
	})
	return vm
}

var setup struct {
	once           sync.Once
	kernel, initrd string
	err            error
}

// Paths returns the kernel and initramfs to boot. The first call runs scripts/testbed/setup.sh (which
// installs the host's missing tools, fetches the guest's packages and builds the initramfs from them);
// TESTBED_KERNEL and TESTBED_INITRD, when both are set, are used instead.
func Paths() (kernel, initrd string, err error) {
	setup.once.Do(func() {
		k, i := os.Getenv("TESTBED_KERNEL"), os.Getenv("TESTBED_INITRD")
		if k != "" && i != "" {
			setup.kernel, setup.initrd = k, i
			return
		}
		script, err := scriptPath("setup.sh")
		if err != nil {
			setup.err = err
			return
		}
		var stderr bytes.Buffer
		cmd := exec.Command(script)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			setup.err = fmt.Errorf("%s: %v\n%s", script, err, stderr.Bytes())
			return
		}
		for _, line := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(line, "KERNEL="); ok {
				setup.kernel = v
			} else if v, ok := strings.CutPrefix(line, "INITRD="); ok {
				setup.initrd = v
			}
		}
		if setup.kernel == "" || setup.initrd == "" {
			setup.err = fmt.Errorf("%s printed no KERNEL= and INITRD= lines:\n%s", script, out)
		}
	})
	return setup.kernel, setup.initrd, setup.err
}

// scriptPath finds scripts/testbed/NAME: above the working directory (go test runs in the package's
// directory, anywhere in the module), else relative to this source file.
func scriptPath(name string) (string, error) {
	rel := filepath.Join("scripts", "testbed", name)
	if dir, err := os.Getwd(); err == nil {
		for {
			p := filepath.Join(dir, rel)
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		p := filepath.Join(filepath.Dir(file), "..", "..", rel)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("testbed: %s not found above the working directory", rel)
}

// Start boots a VM running opts.GuestScript. The VM is killed when ctx is done or opts.Timeout has passed;
// call Wait or Kill to release it.
func Start(ctx context.Context, opts Options) (*VM, error) {
	kernel, initrd, err := Paths()
	if err != nil {
		return nil, err
	}
	runVM, err := scriptPath("run-vm.sh")
	if err != nil {
		return nil, err
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Mem <= 0 {
		opts.Mem = 1024
	}
	if opts.CPUs <= 0 {
		opts.CPUs = 2
	}
	vm := &VM{share: opts.ShareDir, forward: map[int]int{}, log: opts.Log,
		changed: make(chan struct{}), done: make(chan struct{})}
	if vm.share == "" {
		if vm.share, err = os.MkdirTemp("", "smbdirect-vm-"); err != nil {
			return nil, err
		}
		vm.tmp = true
	}
	fail := func(err error) (*VM, error) {
		if vm.tmp {
			os.RemoveAll(vm.share)
		}
		return nil, err
	}
	if opts.GuestScript != "" {
		script := opts.GuestScript
		if !strings.HasPrefix(script, "#!") {
			script = "#!/bin/sh\n" + script
		}
		if !strings.HasSuffix(script, "\n") {
			script += "\n"
		}
		if err := os.WriteFile(filepath.Join(vm.share, "guest.sh"), []byte(script), 0o755); err != nil {
			return fail(err)
		}
		// WriteFile keeps the mode of an existing file.
		if err := os.Chmod(filepath.Join(vm.share, "guest.sh"), 0o755); err != nil {
			return fail(err)
		}
	}
	args := []string{vm.share}
	for _, f := range opts.Forwards {
		hp := f.HostPort
		if hp == 0 {
			// Free now; qemu binds it a moment later. Another process could take it in between, which
			// qemu reports as a failed hostfwd rule.
			if hp, err = FreePort(); err != nil {
				return fail(err)
			}
		}
		if _, dup := vm.forward[f.GuestPort]; !dup {
			vm.forward[f.GuestPort] = hp
		}
		args = append(args, fmt.Sprintf("hostfwd=tcp:127.0.0.1:%d-%s:%d", hp, GuestIP, f.GuestPort))
	}

	r, w, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	cmd := exec.Command(runVM, args...)
	cmd.Env = append(os.Environ(),
		"TESTBED_KERNEL="+kernel, "TESTBED_INITRD="+initrd,
		"TESTBED_MEM="+strconv.Itoa(opts.Mem), "TESTBED_CPUS="+strconv.Itoa(opts.CPUs),
		// The script's own timeout is the backstop should this process die without killing qemu.
		"TESTBED_TIMEOUT="+strconv.Itoa(int((opts.Timeout+time.Second-1)/time.Second)))
	cmd.Stdout, cmd.Stderr = w, w
	// Its own process group, so Kill reaches run-vm.sh, timeout, qemu and tee at once.
	ownGroup(cmd)
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return fail(err)
	}
	w.Close()
	vm.cmd = cmd

	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	vm.cancel = cancel
	go func() {
		select {
		case <-ctx.Done():
			vm.mu.Lock()
			if !vm.exiting && !vm.killed {
				vm.err = ErrTimeout
				if ctx.Err() == context.Canceled {
					vm.err = ctx.Err() // the caller's context, not our deadline
				}
				killGroup(vm.cmd.Process)
			}
			vm.mu.Unlock()
		case <-vm.done:
		}
	}()
	go vm.run(r)
	return vm, nil
}

// run collects the console output until qemu is gone, then records how the VM ended.
func (vm *VM) run(r *os.File) {
	defer vm.cancel() // after done is closed, so the watcher never mistakes it for the caller's
	defer close(vm.done)
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			chunk := bytes.ReplaceAll(buf[:n], []byte("\r"), nil)
			if vm.log != nil {
				vm.log.Write(chunk)
			}
			vm.mu.Lock()
			vm.out = append(vm.out, chunk...)
			close(vm.changed)
			vm.changed = make(chan struct{})
			vm.mu.Unlock()
		}
		if err != nil {
			break
		}
	}
	r.Close()
	vm.mu.Lock()
	vm.exiting = true
	vm.mu.Unlock()
	werr := vm.cmd.Wait()
	if vm.tmp {
		os.RemoveAll(vm.share)
	}

	vm.mu.Lock()
	defer vm.mu.Unlock()
	var ee *exec.ExitError
	switch {
	case vm.killed:
		vm.err = ErrKilled
	case vm.err != nil: // our deadline or the caller's context
	case errors.As(werr, &ee) && ee.ExitCode() == 124:
		vm.err = ErrTimeout // run-vm.sh's own timeout fired first
	case exitCode(vm.out) < 0:
		vm.err = fmt.Errorf("testbed: the VM ended without GUEST_EXIT (%v); console tail:\n%s", werr, tail(vm.out, 2000))
	}
	vm.ended = true
	close(vm.changed)
}

// Wait waits for the VM to end and returns its console output and the guest script's status. The error
// says whether the VM itself failed (timed out, killed, ended without a GUEST_EXIT line); a guest script
// that failed is Result.ExitCode != 0 with a nil error.
func (vm *VM) Wait() (Result, error) {
	<-vm.done
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return Result{Output: string(vm.out), ExitCode: exitCode(vm.out)}, vm.err
}

// Kill ends the VM now and waits until qemu is gone. It may be called more than once, also after Wait.
func (vm *VM) Kill() {
	vm.mu.Lock()
	// Once the console hit EOF every process of the group has let go of it and is exiting; after run
	// has reaped the leader, its process group id may already belong to someone else.
	if !vm.exiting && vm.err == nil {
		vm.killed = true
		killGroup(vm.cmd.Process)
	}
	vm.mu.Unlock()
	<-vm.done
}

// Output returns the console output so far.
func (vm *VM) Output() string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return string(vm.out)
}

// WaitFor waits until a console line contains marker and returns that line, whole: the console arrives in
// chunks, so a line is returned once its newline has come (or the VM has ended). It fails when ctx is done
// or the VM ends first. Markers printed before the call count.
func (vm *VM) WaitFor(ctx context.Context, marker string) (string, error) {
	for {
		vm.mu.Lock()
		out, ended, changed := vm.out, vm.ended, vm.changed
		vm.mu.Unlock()
		if i := bytes.Index(out, []byte(marker)); i >= 0 {
			start := bytes.LastIndexByte(out[:i], '\n') + 1
			if j := bytes.IndexByte(out[i:], '\n'); j >= 0 {
				return string(out[start : i+j]), nil
			}
			if ended {
				return string(out[start:]), nil
			}
		}
		if ended {
			return "", fmt.Errorf("testbed: the VM ended before printing %q; console tail:\n%s", marker, tail(out, 2000))
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return "", fmt.Errorf("testbed: waiting for %q: %w", marker, ctx.Err())
		}
	}
}

// HostPort returns the host port (on 127.0.0.1) forwarded to guestPort, 0 if there is none.
func (vm *VM) HostPort(guestPort int) int { return vm.forward[guestPort] }

// ShareDir returns the host directory the guest sees as /mnt/work.
func (vm *VM) ShareDir() string { return vm.share }

var exitRE = regexp.MustCompile(`(?m)^GUEST_EXIT=(\d+)$`)

// exitCode returns the status of the last GUEST_EXIT line, -1 if there is none.
func exitCode(out []byte) int {
	m := exitRE.FindAllSubmatch(out, -1)
	if len(m) == 0 {
		return -1
	}
	n, _ := strconv.Atoi(string(m[len(m)-1][1]))
	return n
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// FreePort returns a TCP port that is free on 127.0.0.1 at the time of the call.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ListenHost listens on a free port of 127.0.0.1, which the guest reaches as HostIP:port. Listening before
// the VM starts leaves no window in which the port could be taken.
func ListenHost() (net.Listener, int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, 0, err
	}
	return l, l.Addr().(*net.TCPAddr).Port, nil
}

// LockHostPort holds a lock on 127.0.0.1:port that every process on the machine honours, until t ends.
// For fixed ports only: cifs.ko dials SMB Direct on port 5445 (then 445) and nothing else, so a test that
// listens there for it cannot pick a free port, and two such tests at once on one machine (two packages,
// or two clones of the repository) found it taken. It waits while another holder runs, at most until t's
// deadline.
func LockHostPort(t testing.TB, port int) {
	t.Helper()
	name := portLockName(port)
	// O_RDONLY suffices for flock, so a file another user created serves as well.
	f, err := os.OpenFile(name, os.O_RDONLY|os.O_CREATE, 0o666)
	if err != nil {
		t.Fatalf("lock for port %d: %v", port, err)
	}
	deadline, ok := t.(interface{ Deadline() (time.Time, bool) })
	for {
		busy, err := tryLock(f)
		if err != nil {
			f.Close()
			t.Fatalf("lock %s: %v", name, err)
		}
		if !busy {
			break
		}
		if ok {
			if d, has := deadline.Deadline(); has && time.Until(d) < time.Minute {
				f.Close()
				t.Fatalf("port %d: another test on this machine held %s until a minute before the deadline", port, name)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Closing the file releases the lock.
	t.Cleanup(func() { f.Close() })
}

// portLockName is LockHostPort's lock file: in the temporary directory rather than a user's cache, since
// the port is the machine's.
func portLockName(port int) string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("smbdirect-port-%d.lock", port))
}
