package cli

import (
	"bytes"
	"flag"
	"strings"
	"testing"
)

func TestPrintFlags(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Bool("server", false, "server side")
	fs.String("socket", "/run/s.sock", "control socket `path`")
	fs.String("mode", "0660", "bits")
	Alias(fs, "s", "server")
	var b bytes.Buffer
	PrintFlags(&b, fs)
	want := "  --mode string\n    \tbits (default \"0660\")\n" +
		"  -s, --server\n    \tserver side\n" +
		"  --socket path\n    \tcontrol socket path (default /run/s.sock)\n"
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
	if err := fs.Parse([]string{"-s"}); err != nil || fs.Lookup("server").Value.String() != "true" {
		t.Fatalf("alias: %v", err)
	}
	if v := Version("tool"); !strings.HasPrefix(v, "tool ") || !strings.HasSuffix(v, ")") {
		t.Fatalf("version %q", v)
	}
}
