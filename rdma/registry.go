package rdma

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
)

// The registry lets a package that needs a provider (smbd, when
// Config.Provider is nil) find one without importing it, the way
// database/sql finds drivers: a provider package registers itself in its
// init function, and a program chooses it by importing it, e.g.
//
//	import _ "github.com/smbdirect/smbdirect/iwarp"
//
// It is the only global state of this package. Code that is handed a
// Provider never needs it.

// ErrNoProvider: no provider is registered under the name asked for, or,
// for a default, none or several are registered.
var ErrNoProvider = errors.New("rdma: no provider")

// ProviderConfig is what a registered provider is opened with: settings
// every provider understands. Provider-specific settings need the
// provider's own constructor.
type ProviderConfig struct {
	// Logger receives provider events; nil discards them.
	Logger *slog.Logger
}

var registry struct {
	sync.Mutex
	open  map[string]func(ProviderConfig) Provider
	names []string // in registration order
}

// Register makes a provider available by name. It is meant to be called
// from the provider package's init function; it panics when name is
// empty, already registered, or open is nil, as those are programming
// errors.
func Register(name string, open func(ProviderConfig) Provider) {
	registry.Lock()
	defer registry.Unlock()
	if name == "" || open == nil {
		panic("rdma: Register with an empty name or a nil function")
	}
	if registry.open[name] != nil {
		panic("rdma: provider " + name + " registered twice")
	}
	if registry.open == nil {
		registry.open = make(map[string]func(ProviderConfig) Provider)
	}
	registry.open[name] = open
	registry.names = append(registry.names, name)
}

// Providers returns the names of the registered providers, sorted.
func Providers() []string {
	registry.Lock()
	defer registry.Unlock()
	n := slices.Clone(registry.names)
	slices.Sort(n)
	return n
}

// Open returns a new provider of the registered name.
func Open(name string, cfg ProviderConfig) (Provider, error) {
	registry.Lock()
	open := registry.open[name]
	registry.Unlock()
	if open == nil {
		return nil, fmt.Errorf("%w named %q is registered (registered: %s)", ErrNoProvider, name, listNames())
	}
	return open(cfg), nil
}

// OpenDefault returns a new provider of the only registered one. With
// none registered, or several, it fails with ErrNoProvider and says what
// to do: the choice between several providers is the program's, so it is
// never made silently here.
func OpenDefault(cfg ProviderConfig) (Provider, error) {
	registry.Lock()
	names := slices.Clone(registry.names)
	registry.Unlock()
	switch len(names) {
	case 0:
		return nil, fmt.Errorf("%w registered: import one, e.g. _ \"github.com/smbdirect/smbdirect/iwarp\", or pass a Provider", ErrNoProvider)
	case 1:
		return Open(names[0], cfg)
	}
	return nil, fmt.Errorf("%w chosen: several are registered (%s); pass a Provider, e.g. from rdma.Open", ErrNoProvider, listNames())
}

func listNames() string {
	n := Providers()
	if len(n) == 0 {
		return "none"
	}
	return strings.Join(n, ", ")
}
