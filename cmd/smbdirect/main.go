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
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "smbdirect:", err)
		}
		var ue usageError
		if errors.As(err, &ue) || errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError string

func (e usageError) Error() string { return string(e) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	ctx = withStreams(ctx, stdout, stderr)
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printTop(stdout)
		if len(args) == 0 {
			return usageError("no command given")
		}
		return nil
	}
	path := []string{args[0]}
	c := commands[args[0]]
	if c == nil {
		printTop(stderr)
		return usageError(fmt.Sprintf("unknown command %q", args[0]))
	}
	args = args[1:]
	for c.sub != nil {
		if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
			printGroup(stdout, path, c)
			if len(args) == 0 {
				return usageError(fmt.Sprintf("%s needs a subcommand", strings.Join(path, " ")))
			}
			return nil
		}
		next := c.sub[args[0]]
		if next == nil {
			printGroup(stderr, path, c)
			return usageError(fmt.Sprintf("unknown command %q", strings.Join(append(path, args[0]), " ")))
		}
		path = append(path, args[0])
		c, args = next, args[1:]
	}
	fs := flag.NewFlagSet("smbdirect "+strings.Join(path, " "), flag.ContinueOnError)
	fs.SetOutput(stderr)
	runFn := c.setup(fs)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: smbdirect %s %s\n\n%s\n", strings.Join(path, " "), c.usage, c.short)
		if c.long != "" {
			fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.long))
		}
		fmt.Fprintf(w, "\nflags:\n")
		fs.PrintDefaults()
	}
	for _, a := range args {
		if a == "-h" || a == "--help" || a == "-help" {
			fs.SetOutput(stdout)
			fs.Usage()
			return nil
		}
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	return runFn(ctx, fs.Args())
}

func printTop(w io.Writer) {
	fmt.Fprintf(w, "smbdirect: SMB Direct (MS-SMBD) and soft-iWARP RDMA in user space\n\nusage: smbdirect <command> [flags] [args]\n\ncommands:\n")
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
