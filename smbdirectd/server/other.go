//go:build !linux

// Package server is the smbdirectd daemon. It runs on Linux
// only (it relies on SO_PEERCRED, memfds, SO_SNDBUFFORCE and sendfile);
// on other systems the package is empty. See daemon.go.
package server
