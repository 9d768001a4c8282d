package syncbuf

import (
	"strings"
	"sync"
	"testing"
)

func TestBuffer(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				b.Write([]byte("ab"))
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	if got := b.String(); got != strings.Repeat("ab", 800) {
		t.Fatalf("%d bytes, want 1600 of \"ab\"", len(got))
	}
}

func TestBufferLimit(t *testing.T) {
	b := Buffer{Limit: 4}
	for _, s := range []string{"abc", "def", "ghi"} {
		if n, err := b.Write([]byte(s)); n != 3 || err != nil {
			t.Fatalf("Write(%q) = %d, %v; want 3, nil", s, n, err)
		}
	}
	if got := b.String(); got != "abcdef" {
		t.Fatalf("kept %q, want %q (writes stop once Limit is reached)", got, "abcdef")
	}
}
