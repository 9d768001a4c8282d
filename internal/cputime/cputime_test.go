package cputime

import (
	"runtime"
	"testing"
	"time"
)

func TestProcessGrows(t *testing.T) {
	a, ok := Process()
	if !ok {
		if runtime.GOOS == "windows" || runtime.GOOS == "plan9" || runtime.GOOS == "js" || runtime.GOOS == "wasip1" {
			return // not read there, as documented
		}
		t.Fatal("no CPU time on a Unix system")
	}
	for end := time.Now().Add(20 * time.Millisecond); time.Now().Before(end); {
	}
	if b, _ := Process(); b <= a {
		t.Fatalf("CPU time %v after 20 ms of spinning, was %v", b, a)
	}
}

func TestProcField(t *testing.T) {
	b := []byte("rchar: 12345\nwchar: 7\nsyscr: 42\n")
	if got := procField(b, "syscr"); got != 42 {
		t.Fatalf("syscr %d, want 42", got)
	}
	if got := procField(b, "rchar"); got != 12345 {
		t.Fatalf("rchar %d, want 12345", got)
	}
	if got := procField(b, "absent"); got != 0 {
		t.Fatalf("absent field %d, want 0", got)
	}
}
