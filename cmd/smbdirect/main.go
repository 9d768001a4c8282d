// Command smbdirect is the smbdirect tool: a demo of the embedded
// soft-iWARP provider, benchmarks against plain TCP, an rping-compatible
// peer and SMB Direct utilities.
//
// Each subcommand lives in its own file and registers itself in init.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/smbdirect/smbdirect/internal/cli"
)

// command is one subcommand.
type command struct {
	name  string
	usage string // one line: arguments
	short string // one line: what it does
	long  string // paragraph(s) for --help
	// run parses args with fs (already populated by setup) and runs.
	setup func(fs *flag.FlagSet) func(ctx context.Context, args []string) error
	// sub holds nested subcommands (e.g. "bench rdma").
	sub map[string]*command
}

var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

// registerSub adds a nested command under parent (created if missing).
func registerSub(parent, short string, c *command) {
	p := commands[parent]
	if p == nil {
		p = &command{name: parent, short: short, sub: map[string]*command{}}
		commands[parent] = p
	}
	p.sub[c.name] = c
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode prints err once, on one line, and maps it to the exit status:
// 2 for usage errors, 1 for others.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var es exitStatus
	if errors.As(err, &es) {
		return int(es)
	}
	var re reportedError
	if !errors.As(err, &re) {
		fmt.Fprintln(stderr, "smbdirect:", err)
	}
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// usageError is a bad command line: exit status 2.
type usageError string

func (e usageError) Error() string { return string(e) }

// exitStatus is the status to exit with, nothing printed (smbdirect exec
// passes on its program's).
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// reportedError is a failure the command has already reported (in its
// JSON output): the exit status says it, nothing more is printed.
type reportedError struct{ err error }

func (e reportedError) Error() string { return e.err.Error() }
func (e reportedError) Unwrap() error { return e.err }

func isHelp(a string) bool { return a == "-h" || a == "--help" || a == "-help" }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	ctx = withStreams(ctx, stdout, stderr)
	if len(args) == 0 {
		printTop(stderr)
		return usageError("no command given")
	}
	switch {
	case isHelp(args[0]):
		printTop(stdout)
		return nil
	case args[0] == "--version" || args[0] == "-version":
		fmt.Fprintln(stdout, cli.Version("smbdirect"))
		return nil
	case args[0] == "help":
		// "help CMD" is "CMD --help".
		if len(args) == 1 {
			printTop(stdout)
			return nil
		}
		return run(ctx, append(append([]string(nil), args[1:]...), "--help"), stdout, stderr)
	}
	path := []string{args[0]}
	c := commands[args[0]]
	if c == nil {
		return usageError(fmt.Sprintf("unknown command %q (smbdirect --help lists them)", args[0]))
	}
	args = args[1:]
	for c.sub != nil {
		if len(args) == 0 {
			printGroup(stderr, path, c)
			return usageError(fmt.Sprintf("%s needs a subcommand", strings.Join(path, " ")))
		}
		if isHelp(args[0]) {
			printGroup(stdout, path, c)
			return nil
		}
		next := c.sub[args[0]]
		if next == nil {
			return usageError(fmt.Sprintf("unknown command %q (smbdirect %s --help lists them)",
				strings.Join(append(path, args[0]), " "), strings.Join(path, " ")))
		}
		path = append(path, args[0])
		c, args = next, args[1:]
	}
	name := strings.Join(path, " ")
	fs := flag.NewFlagSet("smbdirect "+name, flag.ContinueOnError)
	// The flag package would print a parse error above the usage; we
	// print it once, below, as the one line of a usage error.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	runFn := c.setup(fs)
	for _, a := range args {
		if a == "--" {
			break
		}
		if isHelp(a) {
			fmt.Fprintf(stdout, "usage: smbdirect %s %s\n\n%s\n", name, c.usage, c.short)
			if c.long != "" {
				fmt.Fprintf(stdout, "\n%s\n", strings.TrimSpace(c.long))
			}
			fmt.Fprintf(stdout, "\nflags:\n")
			cli.PrintFlags(stdout, fs)
			return nil
		}
	}
	if err := fs.Parse(args); err != nil {
		return usageError(fmt.Sprintf("%s: %v (see smbdirect %s --help)", name, err, name))
	}
	err := runFn(ctx, fs.Args())
	var ue usageError
	if errors.As(err, &ue) {
		return usageError(fmt.Sprintf("%s: %s", name, ue))
	}
	return err
}

// noArgs is the check of a command that takes no positional arguments.
func noArgs(args []string) error {
	if len(args) > 0 {
		return usageError(fmt.Sprintf("unexpected argument %q", args[0]))
	}
	return nil
}

func printTop(w io.Writer) {
	fmt.Fprintf(w, "smbdirect: SMB Direct (MS-SMBD) and soft-iWARP RDMA in user space\n\nusage: smbdirect <command> [flags] [args]\n       smbdirect help <command>\n       smbdirect --version\n\ncommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].short)
	}
	fmt.Fprintf(w, "\nRun 'smbdirect <command> --help' for a command's flags.\n")
}

func printGroup(w io.Writer, path []string, c *command) {
	fmt.Fprintf(w, "usage: smbdirect %s <subcommand> [flags]\n\n%s\n\nsubcommands:\n", strings.Join(path, " "), c.short)
	names := make([]string, 0, len(c.sub))
	for n := range c.sub {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, c.sub[n].short)
	}
}
