package smbd

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// warnings collects the Warn records a Conn logs.
type warnings struct {
	mu   sync.Mutex
	recs []string
}

func (w *warnings) Enabled(context.Context, slog.Level) bool { return true }
func (w *warnings) Handle(_ context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return nil
	}
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	w.mu.Lock()
	w.recs = append(w.recs, b.String())
	w.mu.Unlock()
	return nil
}
func (w *warnings) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnings) WithGroup(string) slog.Handler      { return w }
func (w *warnings) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.recs...)
}

// A writer that the peer holds back (it reads nothing, so it grants no
// credits) is reported once per StallWarning with the credit accounting,
// and no more once the peer reads; a writer that never waits long is
// never reported.
func TestStallWarning(t *testing.T) {
	var w warnings
	wc := testConfig()
	wc.Logger = slog.New(&w)
	wc.StallWarning = 300 * time.Millisecond
	rc := testConfig()
	rc.MaxQueuedBytes = 1 // two receives: the writer soon runs dry
	wr, rd := pair(t, wc, rc)

	const n = 20
	done := make(chan error, 1)
	go func() {
		for i := range n {
			if err := wr.WriteMessage(pdu(1000, byte(i))); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	// Two warnings: the first after StallWarning, one more after another.
	var got []string
	for deadline := time.Now().Add(20 * time.Second); len(got) < 2 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		got = w.all()
	}
	if len(got) < 2 {
		t.Fatalf("a writer held back by its peer: %d warnings, want 2: %q", len(got), got)
	}
	for _, g := range got {
		if !strings.HasPrefix(g, "smbd: a write is waiting for the peer for=send credits waited=") ||
			!strings.Contains(g, " state=credits 1, peer holds 4 of 4 posted") {
			t.Errorf("warning %q", g)
		}
	}
	buf := make([]byte, 2000)
	for i := range n {
		if k, err := rd.ReadMessage(buf); err != nil || k != 1000 {
			t.Fatalf("message %d: %d bytes, %v", i, k, err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The writer is done: nothing waits, nothing more is reported.
	before := len(w.all())
	time.Sleep(3 * wc.StallWarning)
	if got := w.all(); len(got) != before {
		t.Errorf("warnings with no writer waiting: %q", got[before:])
	}
}
