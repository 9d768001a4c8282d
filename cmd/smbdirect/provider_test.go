//go:build !(linux && cgo && verbs)

package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// In a build without the verbs provider, --provider verbs fails at once
// with one line saying how to build it; the flags are checked as usual.
func TestProviderFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"rping", "-c", "-a", "127.0.0.1", "--provider", "verbs"}, 1, "verbs: this binary was built without the verbs provider: install libibverbs-dev and librdmacm-dev and build with CGO_ENABLED=1 go build -tags verbs"},
		{[]string{"probe", "--provider", "verbs", "10.0.2.15"}, 1, "verbs: this binary was built without"},
		{[]string{"listen", "--provider", "verbs"}, 1, "verbs: this binary was built without"},
		{[]string{"bench", "rdma", "--provider", "verbs", "--local", "10.0.2.15"}, 1, "verbs: this binary was built without"},
		{[]string{"demo", "--provider", "verbs", "--local", "10.0.2.15"}, 1, "verbs: this binary was built without"},
		{[]string{"rping", "-c", "-a", "127.0.0.1", "--provider", "ib"}, 2, `rping: --provider "ib": want iwarp or verbs`},
		{[]string{"rping", "-c", "-a", "127.0.0.1", "--device", "rxe0"}, 2, "rping: --device is for --provider verbs"},
		{[]string{"probe", "--provider", "verbs", "--crc", "h"}, 2, "probe: --crc is for --provider iwarp"},
		{[]string{"bench", "rdma", "--local", "banana"}, 2, `bench rdma: --local "banana": want an IP address`},
	} {
		var out, errb bytes.Buffer
		err := run(context.Background(), c.args, &out, &errb)
		code := exitCode(err, &errb)
		lines := strings.Split(strings.TrimSuffix(errb.String(), "\n"), "\n")
		if code != c.code || len(lines) != 1 || !strings.HasPrefix(lines[0], "smbdirect: "+c.want) || out.Len() != 0 {
			t.Errorf("%q: exit %d, stdout %q, stderr:\n%s", c.args, code, out.String(), errb.String())
		}
	}
}
