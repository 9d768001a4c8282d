//go:build !unix

package smbd_test

import "time"

func processCPU() (time.Duration, bool) { return 0, false }

func readCalls() (calls, bytes int64) { return 0, 0 }
