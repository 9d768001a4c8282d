//go:build !(linux && cgo && verbs)

package verbs

import "github.com/smbdirect/smbdirect/rdma"

// Built is false: this build has no verbs provider.
const Built = false

type stub struct{}

// New returns a provider whose NewPD fails with ErrNotBuilt.
func New(Config) rdma.Provider { return stub{} }

func (stub) Name() string { return Name }

func (stub) NewPD() (rdma.PD, error) { return nil, ErrNotBuilt }

// Devices fails with ErrNotBuilt.
func Devices() ([]string, error) { return nil, ErrNotBuilt }
