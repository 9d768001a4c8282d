//go:build !unix

package smbd_test

import "time"

func processCPU() (time.Duration, bool) { return 0, false }
