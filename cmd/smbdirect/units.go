package main

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// humanBytes formats a byte count with binary units.
func humanBytes(n float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f %s", n, units[i])
	}
	return fmt.Sprintf("%.1f %s", n, units[i])
}

// humanRate formats bytes per second.
func humanRate(bps float64) string { return humanBytes(bps) + "/s" }

// parseSize reads "4096", "64K", "1M", "1GiB".
func parseSize(s string) (int, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B"), "I")
	mul := 1
	switch {
	case strings.HasSuffix(t, "K"):
		mul, t = 1<<10, t[:len(t)-1]
	case strings.HasSuffix(t, "M"):
		mul, t = 1<<20, t[:len(t)-1]
	case strings.HasSuffix(t, "G"):
		mul, t = 1<<30, t[:len(t)-1]
	}
	v, err := strconv.Atoi(t)
	if err != nil || v < 0 || v > math.MaxInt/mul {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return v * mul, nil
}

// isTerminal reports whether f is a terminal (for progress output).
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// sizeFlag parses the value of size flag name, at least minimum bytes,
// with a usage error that says which of the two is wrong.
func sizeFlag(name, v string, minimum int) (int, error) {
	n, err := parseSize(v)
	if err != nil {
		return 0, usageError(fmt.Sprintf("%s %q: not a size (like 4096, 64K, 1M or 1GiB)", name, v))
	}
	if n < minimum {
		return 0, usageError(fmt.Sprintf("%s %s: at least %s", name, v, humanBytes(float64(minimum))))
	}
	return n, nil
}

// positive checks a duration flag: a zero or negative time per
// measurement would divide by zero.
func positive(name string, d time.Duration) error {
	if d <= 0 {
		return usageError(fmt.Sprintf("%s %v: want a positive duration", name, d))
	}
	return nil
}
