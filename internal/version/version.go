// Package version says which build of a command is running, for the
// commands' --version.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// String is "NAME VERSION (commit C[, modified], GO)" from the build
// information Go embeds: the module version when built by `go install
// module@version`, else "(devel)" and the VCS revision of the checkout.
func String(name string) string {
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
