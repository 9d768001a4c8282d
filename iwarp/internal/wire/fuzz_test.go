package wire

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// captureSeeds adds every captured stream (and its FPDU-sized pieces) as
// seeds, so fuzzing starts from what Linux really sends.
func captureSeeds(f *testing.F, skipMPA bool) {
	files, _ := filepath.Glob("testdata/captures/*.bin")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		if skipMPA && bytes.HasPrefix(b, []byte("MPA ID")) && len(b) >= MPAHeaderLen {
			pd := int(b[18])<<8 | int(b[19])
			if MPAHeaderLen+pd <= len(b) {
				b = b[MPAHeaderLen+pd:]
			}
		}
		f.Add(b)
		if skipMPA && len(b) > 2 {
			f.Add(b[2:]) // the first ULPDU
		}
	}
}

func FuzzMPAFrame(f *testing.F) {
	captureSeeds(f, false)
	f.Add(AppendMPAv2(AppendMPAFrame(nil, &MPAFrame{Reply: true, CRC: true, Enhanced: true, Revision: 2, PrivateDataLen: 4}), MPAv2{IRD: 16, ORD: 16, P2P: true, WriteRTR: true}))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, reply := range []bool{false, true} {
			fr, err := ParseMPAFrame(b, reply)
			if err != nil {
				continue
			}
			again := AppendMPAFrame(nil, &fr)
			if !bytes.Equal(again, b[:MPAHeaderLen]) {
				t.Fatalf("re-encoded % x, input % x", again, b[:MPAHeaderLen])
			}
			if v, err := ParseMPAv2(b[MPAHeaderLen:]); err == nil {
				if !bytes.Equal(AppendMPAv2(nil, v), b[MPAHeaderLen:MPAHeaderLen+4]) {
					t.Fatal("v2 block does not round-trip")
				}
			}
		}
	})
}

func FuzzHeader(f *testing.F) {
	captureSeeds(f, true)
	f.Add(AppendReadRequest(nil, &ReadRequest{MSN: 1, Size: 100}))
	f.Add(AppendTagged(nil, OpWrite, true, 1, 2))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := ParseHeader(b)
		if err != nil {
			return
		}
		if n > len(b) {
			t.Fatalf("header length %d > input %d", n, len(b))
		}
		var again []byte
		switch {
		case h.Tagged:
			again = AppendTagged(nil, h.Opcode, h.Last, h.STag, h.TO)
		case h.Opcode == OpReadRequest:
			again = AppendUntagged(nil, h.Opcode, h.Last, h.Inv, h.QN, h.MSN, h.MO)
			r := AppendReadRequest(nil, &ReadRequest{SinkSTag: h.SinkSTag, SinkTO: h.SinkTO, Size: h.ReadSize, SourceSTag: h.SourceSTag, SourceTO: h.SourceTO})
			again = append(again, r[UntaggedLen:]...)
		default:
			again = AppendUntagged(nil, h.Opcode, h.Last, h.Inv, h.QN, h.MSN, h.MO)
		}
		// Reserved bits are not kept: compare with them cleared.
		want := bytes.Clone(b[:n])
		want[0] &^= 0x3c
		want[1] &^= 0x30
		if !bytes.Equal(again, want) {
			t.Fatalf("re-encoded % x\ninput        % x", again, want)
		}
	})
}

func FuzzTerminate(f *testing.F) {
	hdr := append([]byte{0, 20}, AppendUntagged(nil, OpSend, true, 0, 0, 3, 0)...)
	f.Add(AppendTerminate(nil, &Terminate{MSN: 1, Layer: LayerDDP, Type: DDPTypeUntagged, Code: DDPCodeNoBuffer, SegLenValid: true, HasDDP: true, Terminated: hdr}))
	rr := append([]byte{0, 44}, AppendReadRequest(nil, &ReadRequest{MSN: 1})...)
	f.Add(AppendTerminate(nil, &Terminate{MSN: 1, Layer: LayerRDMAP, Type: RDMAPTypeProtection, Code: RDMAPCodeInvalidSTag, SegLenValid: true, HasDDP: true, HasRDMAP: true, Terminated: rr}))
	f.Add(AppendTerminate(nil, &Terminate{MSN: 1, Layer: LayerLLP, Code: LLPCodeCRC}))
	siw, _ := filepath.Glob("testdata/terminate/*.bin")
	for _, name := range siw {
		if b, err := os.ReadFile(name); err == nil && len(b) > MPALenSize {
			f.Add(b[MPALenSize:]) // the ULPDU (and the trailer, which the parser ignores)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tm, err := ParseTerminate(b)
		if err != nil {
			return
		}
		_ = tm.String()
		again, err := ParseTerminate(AppendTerminate(nil, &tm))
		if err != nil || again.Layer != tm.Layer || again.Type != tm.Type || again.Code != tm.Code || !bytes.Equal(again.Terminated, tm.Terminated) {
			t.Fatalf("round trip: %+v -> %+v, %v", tm, again, err)
		}
	})
}

func FuzzFPDUPrefix(f *testing.F) {
	captureSeeds(f, true)
	f.Add(AppendMPALen(AppendReadRequest(nil, &ReadRequest{MSN: 1}), ReadRequestLen))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < FPDUPrefixLen {
			return
		}
		ulpdu, hl := ParseFPDUPrefix(b)
		if ulpdu != int(b[0])<<8|int(b[1]) {
			t.Fatalf("ULPDU length %d from % x", ulpdu, b[:2])
		}
		// The header length announced is the one ParseHeader takes.
		if _, n, err := ParseHeader(b[MPALenSize:]); err == nil && n != hl {
			t.Fatalf("prefix says %d header bytes, ParseHeader took %d", hl, n)
		}
	})
}
