//go:build !(linux && cgo && verbs)

package verbs

import (
	"errors"
	"strings"
	"testing"
)

// A build without the tag says how to get the provider, in one line.
func TestNotBuilt(t *testing.T) {
	p := New(Config{Device: "rxe0"})
	if p.Name() != "verbs" {
		t.Fatalf("Name %q", p.Name())
	}
	_, err := p.NewPD()
	if !errors.Is(err, ErrNotBuilt) {
		t.Fatalf("NewPD: %v, want ErrNotBuilt", err)
	}
	for _, want := range []string{"libibverbs-dev", "librdmacm-dev", "-tags verbs", "CGO_ENABLED=1"} {
		if !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Fatalf("error %q: want one line naming %s", err, want)
		}
	}
	if _, err := Devices(); !errors.Is(err, ErrNotBuilt) {
		t.Fatalf("Devices: %v", err)
	}
}
