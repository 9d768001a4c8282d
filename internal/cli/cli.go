// Package cli holds what the two commands, smbdirect and smbdirectd,
// share in their command lines: --version and the one style of their flag
// lists.
package cli

import (
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
)

// Version is "NAME VERSION (commit C[, modified], GO)" from the build
// information Go embeds: the module version when built by `go install
// module@version`, else "(devel)" and the VCS revision of the checkout.
func Version(name string) string {
	v, rev, dirty := "(devel)", "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	s := fmt.Sprintf("%s %s (", name, v)
	if rev != "" {
		s += "commit " + rev[:min(12, len(rev))]
		if dirty {
			s += ", modified"
		}
		s += ", "
	}
	return s + runtime.Version() + ")"
}

// aliasOf marks a one-letter flag as another name of a long one (rping's
// rdma-core letters): PrintFlags lists it with the long one.
const aliasOf = "\x00alias of "

// Alias makes short another name of the long flag.
func Alias(fs *flag.FlagSet, short, long string) {
	fs.Var(fs.Lookup(long).Value, short, aliasOf+long)
}

// PrintFlags lists fs's flags in the one style of all help texts:
// "--name type", one-letter aliases in front, the usage indented below.
func PrintFlags(w io.Writer, fs *flag.FlagSet) {
	short := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) {
		if long, ok := strings.CutPrefix(f.Usage, aliasOf); ok {
			short[long] = f.Name
		}
	})
	fs.VisitAll(func(f *flag.Flag) {
		if strings.HasPrefix(f.Usage, aliasOf) {
			return
		}
		typ, usage := flag.UnquoteUsage(f)
		line := "  "
		if s := short[f.Name]; s != "" {
			line += "-" + s + ", "
		}
		line += "--" + f.Name
		if typ != "" {
			line += " " + typ
		}
		switch f.DefValue {
		case "", "0", "0s", "false":
		default:
			if typ == "string" {
				usage += fmt.Sprintf(" (default %q)", f.DefValue)
			} else {
				usage += fmt.Sprintf(" (default %s)", f.DefValue)
			}
		}
		fmt.Fprintf(w, "%s\n    \t%s\n", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
	})
}
