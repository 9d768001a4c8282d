//go:build linux && !(cgo && verbs)

package main

import (
	"bytes"
	"io"
	"path/filepath"
	"strings"
	"testing"
)

// In a build without the verbs provider, --provider verbs fails at once
// with one line saying how to build it.
func TestProviderFlags(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--provider", "verbs"}, 1, "smbdirectd: verbs: this binary was built without the verbs provider: install libibverbs-dev and librdmacm-dev and build with CGO_ENABLED=1 go build -tags verbs\n"},
		{[]string{"--provider", "ib"}, 2, `smbdirectd: --provider "ib": want iwarp or verbs`},
		{[]string{"--device", "rxe0"}, 2, "smbdirectd: --device is for --provider verbs"},
		{[]string{"--provider", "verbs", "--crc"}, 2, "smbdirectd: --crc is for --provider iwarp"},
	} {
		var errb bytes.Buffer
		err := run(t.Context(), append([]string{"--socket", sock}, c.args...), io.Discard, nil)
		code := exitCode(err, &errb)
		if code != c.code || !strings.HasPrefix(errb.String(), c.want) || strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("%q: exit %d, stderr %q", c.args, code, errb.String())
		}
	}
}
