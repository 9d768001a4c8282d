// Package sambaconf writes throwaway Samba configurations: an smbd whose
// state, logs, passdb and share all live in one directory, and an
// smbclient whose state does. The tests, internal/sambatest and
// "smbdirect bench samba" share it, so that one smb.conf is what every
// one of them runs.
package sambaconf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Server describes an smbd configuration.
type Server struct {
	// Dir holds everything: smb.conf, the state directories, the logs
	// (log/log.%m) and the share (share/).
	Dir string
	// Port is smbd's TCP port, on 127.0.0.1 only. Zero binds none: smbd
	// is started in inetd mode with its connection as stdin.
	Port int
	// User is the account added to the configuration's own passdb, with
	// Password, and the only one allowed on [share]. It must be a Unix
	// user of this machine. Default root / "secret".
	User, Password string
	// LogLevel is smbd's "log level" (default 1).
	LogLevel int
	// Global and Share are extra lines ("name = value") for [global]
	// and [share]; they come last, so they override.
	Global, Share []string
	// Pdbedit is the pdbedit to run (default "pdbedit" from PATH).
	Pdbedit string
}

// stateDirs are the directories smbd and smbclient keep state in.
var stateDirs = []string{"lock", "state", "cache", "private", "pid", "ncalrpc"}

// Write writes Dir/smb.conf, creates the directories it names and adds
// User to its passdb. It returns the configuration's path.
func Write(ctx context.Context, c Server) (string, error) {
	// smbd runs in a directory of its choosing: absolute paths only.
	dir, err := filepath.Abs(c.Dir)
	if err != nil {
		return "", err
	}
	c.Dir = dir
	if c.User == "" {
		c.User = "root"
	}
	if c.Password == "" {
		c.Password = "secret"
	}
	if c.LogLevel == 0 {
		c.LogLevel = 1
	}
	if c.Pdbedit == "" {
		c.Pdbedit = "pdbedit"
	}
	if err := mkdirs(c.Dir, append(stateDirs, "log", "share")); err != nil {
		return "", err
	}
	p := func(name string) string { return filepath.Join(c.Dir, name) }
	global := [][2]string{
		{"server role", "standalone server"},
		{"workgroup", "WORKGROUP"},
		{"netbios name", "SAMBATEST"},
		{"disable netbios", "yes"},
		{"multicast dns register", "no"},
		{"lock directory", p("lock")},
		{"state directory", p("state")},
		{"cache directory", p("cache")},
		{"private dir", p("private")},
		{"pid directory", p("pid")},
		{"ncalrpc dir", p("ncalrpc")},
		{"log file", p("log/log.%m")},
		{"log level", strconv.Itoa(c.LogLevel)},
		{"passdb backend", "tdbsam:" + p("private/passdb.tdb")},
		// cifs.ko's SMB Direct needs 3.0 or later; nothing older is offered.
		{"server min protocol", "SMB3_00"},
		{"map to guest", "never"},
		{"load printers", "no"},
		{"printcap name", "/dev/null"},
		{"disable spoolss", "yes"},
		// No VFS modules (Debian's default may add some): plain files.
		{"vfs objects", ""},
		// smbd-notifyd starts beside smbd (and beside an inetd
		// connection), and a tree connect that comes before it is
		// registered fails with NT_STATUS_NO_MEMORY ("No notify daemon
		// around"; go-smb2 says "Not Enough Quota"): 1 run in 40 in inetd
		// mode under load, once with a listening smbd. Nothing here needs
		// change notify.
		{"change notify", "no"},
	}
	if c.Port != 0 {
		global = append(global,
			[2]string{"smb ports", strconv.Itoa(c.Port)},
			// 127.0.0.1 only: the VM's guest reaches it as 10.0.2.2
			// through qemu, nothing else can.
			[2]string{"interfaces", "127.0.0.1"},
			[2]string{"bind interfaces only", "yes"})
	} else {
		// Inetd mode binds nothing; a port that is never used.
		global = append(global, [2]string{"smb ports", "1"})
	}
	var b strings.Builder
	b.WriteString("[global]\n")
	for _, kv := range global {
		fmt.Fprintf(&b, "\t%s = %s\n", kv[0], kv[1])
	}
	b.WriteString(Lines(c.Global))
	fmt.Fprintf(&b, "[share]\n\tpath = %s\n\tread only = no\n\tvalid users = %s\n", p("share"), c.User)
	// Files keep ordinary modes rather than DOS attributes mapped onto
	// execute bits.
	b.WriteString("\tcreate mask = 0644\n\tmap archive = no\n")
	b.WriteString(Lines(c.Share))
	conf := p("smb.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		return "", err
	}
	// pdbedit -t reads the password and its confirmation from stdin.
	cmd := exec.CommandContext(ctx, c.Pdbedit, "-s", conf, "-a", "-u", c.User, "-t")
	cmd.Stdin = strings.NewReader(c.Password + "\n" + c.Password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return "", fmt.Errorf("sambaconf: %w (install the samba package)", err)
		}
		return "", fmt.Errorf("sambaconf: pdbedit: %w: %s", err, bytes.TrimSpace(out))
	}
	return conf, nil
}

// WriteClient writes dir/client.conf, smbclient's own configuration:
// its state in dir, SMB3 only, and the extra lines global in [global].
// It returns the file's path.
func WriteClient(dir string, global ...string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if err := mkdirs(dir, stateDirs); err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("[global]\n\tclient min protocol = SMB3\n\tdisable netbios = yes\n")
	for _, d := range stateDirs {
		name := d + " directory"
		switch d {
		case "private":
			name = "private dir"
		case "ncalrpc":
			name = "ncalrpc dir"
		}
		fmt.Fprintf(&b, "\t%s = %s\n", name, filepath.Join(dir, d))
	}
	b.WriteString(Lines(global))
	conf := filepath.Join(dir, "client.conf")
	return conf, os.WriteFile(conf, []byte(b.String()), 0o644)
}

// Lines indents smb.conf lines for a section, each ended by a newline.
func Lines(lines []string) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString("\t" + l + "\n")
	}
	return b.String()
}

func mkdirs(dir string, names []string) error {
	for _, d := range names {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	return nil
}
