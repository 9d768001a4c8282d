// Package clib carries the C sources of the smbdirectd client library and
// of libsmbdirect-preload.so, so that a Go binary (smbdirect exec) can
// build the preload library where none is installed.
package clib

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
)

// Every .c file here starts with "//go:build ignore": without cgo a Go
// package may hold C sources only if the go command ignores them.
//
//go:embed preload.c smbdirect.c smbdirect.h
var sources embed.FS

// PreloadName is the file name of the preload library.
const PreloadName = "libsmbdirect-preload.so"

// preloadSources are the files compiled into the preload library.
var preloadSources = []string{"preload.c", "smbdirect.c"}

// CFlags are the compiler flags of the preload library: warnings are
// errors, and only the interposed calls are exported.
var CFlags = []string{"-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-shared", "-fPIC", "-fvisibility=hidden"}

// ErrNoCompiler: no C compiler to build the preload library with.
var ErrNoCompiler = errors.New("clib: no C compiler (cc) found")

// Hash identifies the preload library's sources and flags: a build is
// reused only for the same hash.
func Hash() string {
	h := sha256.New()
	names, _ := fs.Glob(sources, "*.[ch]")
	sort.Strings(names)
	for _, n := range names {
		b, _ := sources.ReadFile(n)
		fmt.Fprintf(h, "%s %d\n", n, len(b))
		h.Write(b)
	}
	fmt.Fprintf(h, "%q\n", CFlags)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// BuildPreload makes sure dir/<hash>/libsmbdirect-preload.so exists,
// compiling it with cc from the embedded sources if it does not, and
// returns its path and whether it was built now. Concurrent builders do
// not see a half-written library: it is renamed into place.
func BuildPreload(dir string) (path string, built bool, err error) {
	out := filepath.Join(dir, Hash())
	path = filepath.Join(out, PreloadName)
	if _, err := os.Stat(path); err == nil {
		return path, false, nil
	}
	cc, err := exec.LookPath("cc")
	if err != nil {
		if cc, err = exec.LookPath("gcc"); err != nil {
			return "", false, ErrNoCompiler
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", false, err
	}
	src, err := os.MkdirTemp(out, "src-")
	if err != nil {
		return "", false, err
	}
	defer os.RemoveAll(src)
	names, _ := fs.Glob(sources, "*.[ch]")
	for _, n := range names {
		b, _ := sources.ReadFile(n)
		if err := os.WriteFile(filepath.Join(src, n), b, 0o644); err != nil {
			return "", false, err
		}
	}
	tmp := filepath.Join(src, PreloadName)
	args := append(append([]string(nil), CFlags...), "-o", tmp)
	for _, s := range preloadSources {
		args = append(args, filepath.Join(src, s))
	}
	args = append(args, "-ldl")
	cmd := exec.Command(cc, args...)
	var msg bytes.Buffer
	cmd.Stdout, cmd.Stderr = &msg, &msg
	if err := cmd.Run(); err != nil {
		return "", false, fmt.Errorf("clib: building %s: %v\n%s", PreloadName, err, bytes.TrimSpace(msg.Bytes()))
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", false, err
	}
	return path, true, nil
}
