//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

func scalePDUs(t testing.TB, id uint32, pdu, count int) []byte {
	var b bytes.Buffer
	if err := sendPDUs(&b, id, pdu, count); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestScalePDUs: the receiver takes its sender's PDUs, and catches a
// flipped byte, a lost, repeated or reordered PDU and a wrong length by
// their kinds.
func TestScalePDUs(t *testing.T) {
	const pdu, count = 100, 4
	good := scalePDUs(t, 7, pdu, count)
	if len(good) != count*(pdu+4) {
		t.Fatalf("%d bytes", len(good))
	}
	if err := recvPDUs(bytes.NewReader(good), pdu, count, nil); err != nil {
		t.Fatal(err)
	}
	cut := func(b []byte, i int) []byte { return b[i*(pdu+4) : (i+1)*(pdu+4)] }
	flipped := bytes.Clone(good)
	flipped[2*(pdu+4)+50] ^= 1
	flippedID := bytes.Clone(good)
	flippedID[4] ^= 1 // the id of PDU 0: the checksum covers it
	var reordered, lost, repeated []byte
	for _, i := range []int{0, 2, 1, 3} {
		reordered = append(reordered, cut(good, i)...)
	}
	for _, i := range []int{0, 1, 3} {
		lost = append(lost, cut(good, i)...)
	}
	for _, i := range []int{0, 1, 1, 2} {
		repeated = append(repeated, cut(good, i)...)
	}
	other := append(bytes.Clone(good[:pdu+4]), scalePDUs(t, 9, pdu, count)[pdu+4:]...)
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"flipped", flipped, errScaleChecksum},
		{"flipped id", flippedID, errScaleChecksum},
		{"reordered", reordered, errScaleLost},
		{"lost", append(lost, cut(good, 3)...), errScaleLost},
		{"repeated", repeated, errScaleLost},
		{"other end", other, errScaleLost},
		{"short", good[:len(good)-1], nil},
	} {
		err := recvPDUs(bytes.NewReader(tc.b), pdu, count, nil)
		if tc.want == nil {
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// A PDU of another size.
	if err := recvPDUs(bytes.NewReader(scalePDUs(t, 7, pdu+1, 1)), pdu, 1, nil); !errors.Is(err, errScaleLost) {
		t.Errorf("longer PDU: %v", err)
	}
}

// FuzzScaleRecv: the receiver of bench scale's PDUs reads network bytes;
// whatever they are, it returns (no panic) and accepts only its sender's
// PDUs.
func FuzzScaleRecv(f *testing.F) {
	const pdu, count = 64, 3
	good := scalePDUs(f, 1, pdu, count)
	f.Add(good)
	f.Add(good[:30])
	f.Add(append(bytes.Clone(good[:68]), good[136:]...))
	f.Add([]byte{0, 0, 0, 64})
	f.Add([]byte{1, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		err := recvPDUs(bytes.NewReader(b), pdu, count, nil)
		if err == nil && !bytes.Equal(b[:count*(pdu+4)], scalePDUs(t, binaryID(b), pdu, count)) {
			t.Fatalf("accepted PDUs its sender would not send: % x", b)
		}
	})
}

func binaryID(b []byte) uint32 {
	return uint32(b[4])<<24 | uint32(b[5])<<16 | uint32(b[6])<<8 | uint32(b[7])
}

// scaleOK: bench scale passed its checks; under the race detector the
// memory budget does not count (race_test.go), the other checks do.
func scaleOK(t *testing.T, err error) bool {
	var l errList
	if raceEnabled && errors.As(err, &l) {
		for _, e := range l {
			if !errors.Is(e, errScaleBudget) {
				return false
			}
		}
		t.Logf("-race: %v", err)
		return true
	}
	return err == nil
}

// TestBenchScaleJSON runs bench scale with a few connections: every
// figure is there, and the checks (checksums, leaks, the memory budget)
// pass.
func TestBenchScaleJSON(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"bench", "scale", "--json", "--conns", "20", "--size", "64KiB", "--pdu", "16KiB"}, &out, &errb); !scaleOK(t, err) {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{"scale_setup", "scale_idle_mem_per_end", "scale_idle_mem_per_pair", "scale_mem_per_end_after_traffic", "scale_goroutines_per_end", "scale_fds_per_end", "scale_exchange"}
	if len(lines) != len(want) {
		t.Fatalf("%d lines:\n%s", len(lines), out.String())
	}
	for i, l := range lines {
		var r benchResult
		if err := json.Unmarshal([]byte(l), &r); err != nil || r.Test != want[i] || r.Ours <= 0 {
			t.Fatalf("line %q: %+v %v", l, r, err)
		}
	}
}

// TestBenchScaleDaemon: 100 connections through an smbdirectd from 10
// client processes (the full run is --conns 1000 --procs 50, by hand).
func TestBenchScaleDaemon(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"bench", "scale", "--conns", "100", "--procs", "10", "--daemon", "--size", "64KiB"}, &out, &errb); !scaleOK(t, err) {
		t.Fatalf("%v\n%s\n%s", err, out.String(), errb.String())
	}
	t.Logf("\n%s", out.String())
	for _, w := range []string{"daemon_scale_setup", "daemon_scale_exchange", "none lost or corrupt", "from 10 client processes"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("no %q in\n%s", w, out.String())
		}
	}
}

func TestBenchScaleUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--conns", "0"},
		{"--pdu", "2MiB"},
		{"--pdu", "10"},
		{"--size", "1KiB", "--pdu", "4KiB"},
		{"--daemon", "--procs", "0"},
		{"--daemon", "--conns", "5", "--procs", "6"},
		{"extra"},
	} {
		var out, errb bytes.Buffer
		err := run(context.Background(), append([]string{"bench", "scale"}, args...), &out, &errb)
		var ue usageError
		if !errors.As(err, &ue) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: %v, want a one-line usage error", args, err)
		}
	}
}

// TestScaleClientJob: a client process refuses a malformed job, and one
// whose daemon is not there, with an error (its "error:" line and exit
// status 1).
func TestScaleClientJob(t *testing.T) {
	for _, job := range []string{"", "a b 1 2 3", "sock peer x 64 1 0", "sock peer 1 64 -1 0"} {
		if err := scaleClient(job, strings.NewReader(""), io.Discard); err == nil || !strings.Contains(err.Error(), "bad job") {
			t.Errorf("job %q: %v", job, err)
		}
	}
	if err := scaleClient(t.TempDir()+"/none.sock 127.0.0.1:1 1 64 1 0", strings.NewReader("\n"), io.Discard); err == nil {
		t.Error("no daemon: no error")
	}
}

// TestCheckFDLimit: a limit below what --conns needs is an errFDLimit,
// said before anything is opened.
func TestCheckFDLimit(t *testing.T) {
	if err := checkFDLimit(1<<40, 1<<39); !errors.Is(err, errFDLimit) {
		t.Fatalf("%v, want errFDLimit", err)
	}
	if err := checkFDLimit(16, 1); err != nil {
		t.Fatal(err)
	}
}
