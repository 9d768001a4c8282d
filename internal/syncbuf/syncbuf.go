// Package syncbuf is a bytes.Buffer that several goroutines may write
// while another reads it: a child process's stdout and stderr, a logger
// under test.
package syncbuf

import (
	"bytes"
	"sync"
)

// Buffer collects writes under a lock. The zero value is ready to use.
type Buffer struct {
	// Limit, when above zero, bounds what is kept: writes past Limit
	// bytes are dropped (and reported as written), so that a chatty
	// process cannot grow it without end.
	Limit int

	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p, or drops it once the buffer holds Limit bytes.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Limit > 0 && s.b.Len() >= s.Limit {
		return len(p), nil
	}
	return s.b.Write(p)
}

// String returns what has been kept so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
