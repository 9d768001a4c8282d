//go:build !linux

// Package daemon is smbdirectd, the SMB Direct daemon. It runs on Linux
// only (it relies on SO_PEERCRED, memfds, SO_SNDBUFFORCE and sendfile);
// on other systems the package is empty. See daemon.go.
package daemon
