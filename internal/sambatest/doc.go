// Package sambatest runs a throwaway, unmodified Samba smbd (the distribution's package) for tests: a
// temporary directory with its own smb.conf, passdb, lock/state/cache/private/pid/ncalrpc directories and
// log, one read-write share [share], one user with a password, and smbd on an unprivileged TCP port of
// 127.0.0.1 only. smbd runs in the foreground in its own process group, optionally behind a wrapper argv
// prefix (such as `smbdirect exec ... --`), so Stop reaches it, its children and the wrapper at once and
// can check that none is left.
//
// The guest of internal/testbed reaches such a server as 10.0.2.2:Port (qemu forwards the host's loopback).
// Linux only: it reads /proc for smbd's processes.
package sambatest
