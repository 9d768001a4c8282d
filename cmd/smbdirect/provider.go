package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net"

	"github.com/smbdirect/smbdirect/iwarp"
	"github.com/smbdirect/smbdirect/rdma"
	"github.com/smbdirect/smbdirect/verbs"
)

// providerChoice is what --provider and --device select (with --crc for
// iwarp, and --local for the commands that connect two endpoints in this
// process).
type providerChoice struct {
	name, device, local string
	crc                 bool
}

// addProviderFlags adds --provider and --device to fs; local adds --local
// (where a pair of endpoints in this process listen).
func addProviderFlags(fs *flag.FlagSet, crc *bool, local bool) func() (*providerChoice, error) {
	name := fs.String("provider", "iwarp", "RDMA `provider`: iwarp (embedded soft-iWARP over TCP) or verbs (the kernel's RDMA devices through rdma-core; needs a build with -tags verbs)")
	device := fs.String("device", "", "RDMA device `name` for --provider verbs (e.g. rxe0, siw0; default: the only one, or the one the address routes through)")
	var loc *string
	if local {
		loc = fs.String("local", "", "local IP `address` both endpoints use (--provider verbs: an address of the RDMA device's interface; iwarp: 127.0.0.1)")
	}
	return func() (*providerChoice, error) {
		p := &providerChoice{name: *name, device: *device}
		if crc != nil {
			p.crc = *crc
		}
		if loc != nil {
			p.local = *loc
		}
		switch p.name {
		case "iwarp":
			if p.device != "" {
				return nil, usageError("--device is for --provider verbs")
			}
		case verbs.Name:
			if p.crc {
				return nil, usageError("--crc is for --provider iwarp (a kernel iWARP device's MPA CRC is its own setting)")
			}
			if !verbs.Built {
				return nil, verbs.ErrNotBuilt
			}
			if local && p.local == "" {
				return nil, usageError("--provider verbs needs --local ADDR, an address of the RDMA device's interface")
			}
		default:
			return nil, usageError(fmt.Sprintf("--provider %q: want iwarp or verbs", p.name))
		}
		if p.local != "" && net.ParseIP(p.local) == nil {
			return nil, usageError(fmt.Sprintf("--local %q: want an IP address", p.local))
		}
		return p, nil
	}
}

// open returns the chosen provider; tune adjusts the iwarp settings.
func (p *providerChoice) open(log *slog.Logger, tune func(*iwarp.Config)) rdma.Provider {
	if p.name == verbs.Name {
		return verbs.New(verbs.Config{Device: p.device, Logger: log})
	}
	cfg := iwarp.Config{CRC: p.crc, Logger: log}
	if tune != nil {
		tune(&cfg)
	}
	return iwarp.New(cfg)
}

// pairAddr is where a pair of endpoints in this process listens.
func (p *providerChoice) pairAddr() string {
	if p.local == "" {
		return "127.0.0.1:0"
	}
	return net.JoinHostPort(p.local, "0")
}

// iwarpChoice is the default choice, for callers without flags (tests).
func iwarpChoice(crc bool) *providerChoice { return &providerChoice{name: "iwarp", crc: crc} }
