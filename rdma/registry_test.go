package rdma

import (
	"errors"
	"log/slog"
	"slices"
	"testing"
)

type fakeProvider struct {
	name string
	log  *slog.Logger
}

func (p *fakeProvider) Name() string       { return p.name }
func (p *fakeProvider) NewPD() (PD, error) { return nil, ErrNotSupported }

// withRegistry runs the test on an empty registry and restores it after.
func withRegistry(t *testing.T) {
	registry.Lock()
	open, names := registry.open, registry.names
	registry.open, registry.names = nil, nil
	registry.Unlock()
	t.Cleanup(func() {
		registry.Lock()
		registry.open, registry.names = open, names
		registry.Unlock()
	})
}

func TestRegistry(t *testing.T) {
	withRegistry(t)
	if _, err := OpenDefault(ProviderConfig{}); !errors.Is(err, ErrNoProvider) {
		t.Fatalf("default of none: %v", err)
	}
	log := slog.New(slog.DiscardHandler)
	open := func(name string) func(ProviderConfig) Provider {
		return func(c ProviderConfig) Provider { return &fakeProvider{name: name, log: c.Logger} }
	}
	Register("b", open("b"))
	p, err := OpenDefault(ProviderConfig{Logger: log})
	if err != nil || p.Name() != "b" || p.(*fakeProvider).log != log {
		t.Fatalf("default of one: %v %v", p, err)
	}
	Register("a", open("a"))
	if got := Providers(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("providers %v", got)
	}
	if _, err := OpenDefault(ProviderConfig{}); !errors.Is(err, ErrNoProvider) {
		t.Fatalf("default of several: %v", err)
	}
	if p, err := Open("a", ProviderConfig{}); err != nil || p.Name() != "a" {
		t.Fatalf("open a: %v %v", p, err)
	}
	if _, err := Open("c", ProviderConfig{}); !errors.Is(err, ErrNoProvider) {
		t.Fatalf("open of an unknown name: %v", err)
	}
	for _, bad := range []func(){
		func() { Register("a", open("a")) },
		func() { Register("", open("x")) },
		func() { Register("x", nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Error("bad Register did not panic")
				}
			}()
			bad()
		}()
	}
}
