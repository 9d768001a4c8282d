package testbed

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCaptures decodes the committed captures (no VM needed): every FPDU must frame correctly, carry a
// correct CRC (or a zero CRC field without CRC) and follow rping's exchange, so the files and
// docs/siw-wire-notes.md cannot drift apart unnoticed. Run with -v for a decoded listing.
func TestCaptures(t *testing.T) {
	type frame struct {
		tagged bool
		op     int
		msn    uint32 // untagged only
	}
	send := func(msn uint32) frame { return frame{false, opSend, msn} }
	readReq := frame{false, opReadReq, 1}
	readResp := frame{tagged: true, op: opReadResp}
	write := frame{tagged: true, op: opWrite}
	streams := map[string]struct {
		mpa    string // key of the leading MPA frame, if any
		frames []frame
	}{
		"siw-client":  {"", []frame{send(1), readResp, send(2)}},
		"host-server": {mpaKeyRep, []frame{readReq, send(1), write, send(2)}},
		"siw-server":  {"", []frame{readReq, send(1), write, send(2)}},
		"host-client": {mpaKeyReq, []frame{send(1), readResp, send(2)}},
	}
	files, _ := filepath.Glob(filepath.Join(captureDir, "*.bin"))
	if len(files) == 0 {
		t.Fatalf("no captures in %s", captureDir)
	}
	for _, file := range files {
		base := strings.TrimSuffix(filepath.Base(file), ".bin")
		t.Run(base, func(t *testing.T) {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			p := &peer{r: bytes.NewReader(b)}
			if strings.HasPrefix(base, "siw-mpa-") {
				f, err := p.readMPA()
				if err != nil {
					t.Fatal(err)
				}
				if p.rx.Len() != len(b) {
					t.Fatalf("%d bytes after the MPA frame", len(b)-p.rx.Len())
				}
				t.Logf("%q flags %04x IRD %04x ORD %04x", f.Key, f.Flags, f.IRD, f.ORD)
				return
			}
			kind, variant, _ := strings.Cut(base, "-stream-")
			want, ok := streams[kind]
			if !ok {
				t.Fatalf("unknown capture %s", base)
			}
			p.crc = variant != "nocrc"
			if want.mpa != "" {
				f, err := p.readMPA()
				if err != nil || f.Key != want.mpa || (f.Flags&mpaFlagCRC != 0) != p.crc {
					t.Fatalf("leading MPA frame %+v, %v", f, err)
				}
				t.Logf("%q flags %04x IRD %04x ORD %04x", f.Key, f.Flags, f.IRD, f.ORD)
			}
			// Tagged messages may come in several DDP segments (L clear on all but the last).
			msg, segs := 0, 0
			for {
				f, err := p.readFPDU()
				if errors.Is(err, io.EOF) && msg == len(want.frames) && segs == 0 {
					break
				}
				if err != nil {
					t.Fatalf("message %d: %v", msg, err)
				}
				t.Logf("%4d bytes, ULPDU %4d, pad %d, CRC field % x: %v", len(f.Raw), f.ULPDULen, f.Pad, f.CRCTrailer, f)
				if msg >= len(want.frames) {
					t.Fatalf("message %d is one too many", msg)
				}
				w := want.frames[msg]
				if f.Tagged != w.tagged || f.Opcode != w.op || !f.Tagged && (!f.Last || f.MSN != w.msn || f.MO != 0) {
					t.Errorf("message %d: %v, want %+v", msg, f, w)
				}
				segs++
				if f.Last {
					msg, segs = msg+1, 0
				}
			}
		})
	}
}
