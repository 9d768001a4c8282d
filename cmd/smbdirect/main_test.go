package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
)

// TestUsageErrors: a bad command line exits 2 with one line on stderr
// that names the problem, and nothing on stdout.
func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"nope"}, `unknown command "nope"`},
		{[]string{"bench", "nope"}, `unknown command "bench nope"`},
		{[]string{"probe", "--nosuch", "h"}, "probe: flag provided but not defined: -nosuch"},
		{[]string{"probe", ""}, `probe: ":5445": no host`},
		{[]string{"probe", ":445"}, `probe: ":445": no host`},
		{[]string{"probe", "a", "b"}, "probe: give exactly one HOST[:PORT]"},
		{[]string{"probe", "--timeout", "0s", "h"}, "probe: --timeout 0s: want a positive duration"},
		{[]string{"bench", "rdma", "--duration", "0"}, "bench rdma: --duration 0s: want a positive duration"},
		{[]string{"bench", "smbd", "--duration", "-1s"}, "bench smbd: --duration -1s: want a positive duration"},
		{[]string{"bench", "daemon", "--duration", "0s"}, "bench daemon: --duration 0s: want a positive duration"},
		{[]string{"bench", "rdma", "--sizes", "64,banana"}, `bench rdma: --sizes "banana": not a size`},
		{[]string{"bench", "rdma", "--depth", "0"}, "bench rdma: --depth 0: want 1 to 64"},
		{[]string{"bench", "daemon", "--file-size", "1KiB"}, "bench daemon: --file-size 1KiB: at least 1.0 MiB"},
		{[]string{"bench", "smbd", "extra"}, `bench smbd: unexpected argument "extra"`},
		{[]string{"demo", "--size", "banana"}, `demo: --size "banana": not a size`},
		{[]string{"demo", "--size", "512K"}, "demo: --size 512K: at least 1.0 MiB"},
		{[]string{"demo", "extra"}, `demo: unexpected argument "extra"`},
		{[]string{"listen", "a", "b"}, "listen: takes at most one ADDR"},
		{[]string{"rping", "-a", "x"}, "rping: give exactly one of -s (--server) and -c (--client)"},
		{[]string{"rping", "-c", "-a", "127.0.0.1", "-S", "5"}, "rping: -S (--size) 5: want 24 to 65535"},
		{[]string{"rping", "-c", "-a", "127.0.0.1", "-C", "-1"}, "rping: -C (--count) -1"},
		{[]string{"rping", "-s", "-V"}, "rping: -V (--validate) is for the client"},
		{[]string{"rping", "-s", "x"}, `rping: unexpected argument "x"`},
	} {
		var out, errb bytes.Buffer
		err := run(context.Background(), c.args, &out, &errb)
		code := exitCode(err, &errb)
		lines := strings.Split(strings.TrimSuffix(errb.String(), "\n"), "\n")
		if code != 2 || len(lines) != 1 || !strings.HasPrefix(lines[0], "smbdirect: "+c.want) || out.Len() != 0 {
			t.Errorf("%q: exit %d, stdout %q, stderr:\n%s", c.args, code, out.String(), errb.String())
		}
	}
}

// TestHelp: "help CMD" is "CMD --help"; every help text lists its flags
// in one style, --name.
func TestHelp(t *testing.T) {
	singleDashLong := regexp.MustCompile(`(?m)^\s+-[a-zA-Z][a-zA-Z-]+`)
	for _, cmd := range [][]string{{"probe"}, {"listen"}, {"rping"}, {"demo"}, {"bench", "rdma"}, {"bench", "smbd"}, {"bench", "daemon"}} {
		var help, viaHelp, errb bytes.Buffer
		if err := run(context.Background(), append(append([]string(nil), cmd...), "--help"), &help, &errb); err != nil {
			t.Fatal(err)
		}
		if err := run(context.Background(), append([]string{"help"}, cmd...), &viaHelp, &errb); err != nil {
			t.Fatal(err)
		}
		if help.String() != viaHelp.String() || errb.Len() != 0 {
			t.Errorf("%v: help differs:\n%s\n---\n%s\n%s", cmd, help.String(), viaHelp.String(), errb.String())
		}
		h := help.String()
		if !strings.HasPrefix(h, "usage: smbdirect "+strings.Join(cmd, " ")) || !strings.Contains(h, "\nflags:\n  ") || singleDashLong.MatchString(h) {
			t.Errorf("%v help:\n%s", cmd, h)
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"probe", "--help"}, &out, &out); err != nil || !strings.Contains(out.String(), "  --timeout duration\n    \toverall time limit (default 30s)\n") {
		t.Errorf("probe help: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"rping", "--help"}, &out, &out); err != nil || !strings.Contains(out.String(), "  -S, --size size\n") {
		t.Errorf("rping help: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"--version"}, &out, &out); err != nil || !strings.HasPrefix(out.String(), "smbdirect ") || strings.Count(out.String(), "\n") != 1 {
		t.Errorf("--version: %v %q", err, out.String())
	}
}
