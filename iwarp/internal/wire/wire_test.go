package wire

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// TestMPARequestAsSiw: our encoder produces the exact request Linux siw
// sends (captured), and parses it back.
func TestMPARequestAsSiw(t *testing.T) {
	siw, err := os.ReadFile("testdata/captures/siw-mpa-request.bin")
	if err != nil {
		t.Fatal(err)
	}
	f := MPAFrame{Enhanced: true, Revision: 2, PrivateDataLen: 4}
	b := AppendMPAFrame(nil, &f)
	b = AppendMPAv2(b, MPAv2{IRD: 1, ORD: 1})
	if !bytes.Equal(b, siw) {
		t.Fatalf("ours % x\nsiw  % x", b, siw)
	}
	g, err := ParseMPAFrame(siw, false)
	if err != nil || g != f {
		t.Fatalf("parse: %+v %v", g, err)
	}
	v, err := ParseMPAv2(siw[MPAHeaderLen:])
	if err != nil || v != (MPAv2{IRD: 1, ORD: 1}) {
		t.Fatalf("v2: %+v %v", v, err)
	}
	for _, name := range []string{"siw-mpa-reply.bin", "siw-mpa-reply-crc.bin"} {
		b, _ := os.ReadFile("testdata/captures/" + name)
		r, err := ParseMPAFrame(b, true)
		if err != nil || !r.Reply || !r.Enhanced || r.Revision != 2 || r.CRC != (name == "siw-mpa-reply-crc.bin") {
			t.Fatalf("%s: %+v %v", name, r, err)
		}
	}
	if _, err := ParseMPAFrame(siw, true); !errors.Is(err, ErrMalformed) {
		t.Fatalf("request parsed as reply: %v", err)
	}
}

func TestHeaderBytes(t *testing.T) {
	cases := []struct {
		name string
		got  []byte
		want string
	}{
		{"write", AppendTagged(nil, OpWrite, true, 0x11223344, 0x0102030405060708), "c140" + "11223344" + "0102030405060708"},
		{"read response, not last", AppendTagged(nil, OpReadResponse, false, 1, 2), "8142" + "00000001" + "0000000000000002"},
		{"send", AppendUntagged(nil, OpSend, true, 0, QNSend, 1, 0), "4143" + "00000000" + "00000000" + "00000001" + "00000000"},
		{"send inv se", AppendUntagged(nil, OpSendSEInv, false, 0xabcdef01, QNSend, 7, 1364), "0146" + "abcdef01" + "00000000" + "00000007" + "00000554"},
		{"read request", AppendReadRequest(nil, &ReadRequest{MSN: 1, SinkSTag: 2, SinkTO: 3, Size: 4, SourceSTag: 5, SourceTO: 6}),
			"4141" + "00000000" + "00000001" + "00000001" + "00000000" + "00000002" + "0000000000000003" + "00000004" + "00000005" + "0000000000000006"},
	}
	for _, c := range cases {
		if !bytes.Equal(c.got, unhex(c.want)) {
			t.Errorf("%s: % x, want %s", c.name, c.got, c.want)
		}
		h, n, err := ParseHeader(c.got)
		if err != nil || n != len(c.got) {
			t.Errorf("%s: parse %d %v", c.name, n, err)
		}
		_ = h
	}
	if len(cases[4].got) != ReadRequestLen {
		t.Fatal("read request length")
	}
}

func TestHeaderErrors(t *testing.T) {
	good := AppendUntagged(nil, OpSend, true, 0, 0, 1, 0)
	cases := []struct {
		name             string
		b                []byte
		layer, typ, code uint8
	}{
		{"DDP version 2", func() []byte { b := bytes.Clone(good); b[0] = b[0]&^3 | 2; return b }(), LayerDDP, DDPTypeUntagged, DDPCodeUntaggedVersion},
		{"RDMAP version 0", func() []byte { b := bytes.Clone(good); b[1] &^= 0xc0; return b }(), LayerRDMAP, RDMAPTypeRemoteOp, RDMAPCodeVersion},
		{"opcode 9", func() []byte { b := bytes.Clone(good); b[1] = b[1]&^0xf | 9; return b }(), LayerRDMAP, RDMAPTypeRemoteOp, RDMAPCodeOpcode},
		{"send on queue 1", AppendUntagged(nil, OpSend, true, 0, 1, 1, 0), LayerDDP, DDPTypeUntagged, DDPCodeInvalidQN},
		{"tagged send", func() []byte { b := bytes.Clone(good); b[0] |= 0x80; return b }(), LayerRDMAP, RDMAPTypeRemoteOp, RDMAPCodeOpcode},
	}
	for _, c := range cases {
		_, _, err := ParseHeader(c.b)
		var he *HeaderError
		if !errors.As(err, &he) || he.Layer != c.layer || he.Type != c.typ || he.Code != c.code || !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	if _, _, err := ParseHeader(good[:10]); !errors.Is(err, ErrShort) {
		t.Errorf("short: %v", err)
	}
}

func TestTerminateRoundTrip(t *testing.T) {
	hdr := append([]byte{0, 100}, AppendTagged(nil, OpWrite, true, 9, 10)...)
	in := Terminate{MSN: 1, Layer: LayerDDP, Type: DDPTypeTagged, Code: DDPCodeTaggedBaseBounds, SegLenValid: true, HasDDP: true, Terminated: hdr}
	b := AppendTerminate(nil, &in)
	if len(b) != TerminateLen+len(hdr) {
		t.Fatalf("length %d", len(b))
	}
	out, err := ParseTerminate(b)
	if err != nil || out.Layer != in.Layer || out.Code != in.Code || !bytes.Equal(out.Terminated, hdr) || !out.HasDDP {
		t.Fatalf("%+v %v", out, err)
	}
	if out.String() != "layer DDP, type 1, code 0x01 (tagged: base or bounds violation)" {
		t.Fatalf("%q", out.String())
	}
}

func TestFraming(t *testing.T) {
	// A 16-byte Send: ULPDU 34, 2+34 = 36 needs no pad; a 100-byte RDMA
	// Read Response: ULPDU 114, 2+114 = 116, no pad; 101 bytes: 3 pad.
	for _, c := range []struct{ ulpdu, pad, fpdu int }{{34, 0, 40}, {114, 0, 120}, {115, 3, 124}, {0, 2, 8}} {
		if PadLen(c.ulpdu) != c.pad || FPDULen(c.ulpdu) != c.fpdu {
			t.Errorf("ULPDU %d: pad %d, FPDU %d", c.ulpdu, PadLen(c.ulpdu), FPDULen(c.ulpdu))
		}
	}
	if got := UpdateCRC(0, []byte("123456789")); got != 0xe3069283 {
		t.Fatalf("CRC32c known answer: 0x%08x", got)
	}
}

// TestCapturedCRCs walks every captured CRC stream FPDU by FPDU and checks
// each trailer with our CRC code: this pins the byte order to siw's.
func TestCapturedCRCs(t *testing.T) {
	files, _ := filepath.Glob("testdata/captures/*-stream-crc*.bin")
	if len(files) == 0 {
		t.Fatal("no captures")
	}
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if bytes.HasPrefix(b, []byte("MPA ID")) {
			_, err := ParseMPAFrame(b, bytes.HasPrefix(b, []byte(KeyReply)))
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			b = b[MPAHeaderLen+int(b[18])<<8+int(b[19]):]
		}
		n := 0
		for len(b) > 0 {
			ulpdu := int(b[0])<<8 | int(b[1])
			l := FPDULen(ulpdu)
			if l > len(b) {
				t.Fatalf("%s: FPDU %d truncated", f, n)
			}
			if _, _, err := ParseHeader(b[2:]); err != nil {
				t.Fatalf("%s: FPDU %d: %v", f, n, err)
			}
			if got, want := CRCFromTrailer(b[l-4:]), UpdateCRC(0, b[:l-4]); got != want {
				t.Fatalf("%s: FPDU %d: CRC 0x%08x, computed 0x%08x", f, n, got, want)
			}
			b = b[l:]
			n++
		}
		if n == 0 {
			t.Fatalf("%s: no FPDUs", f)
		}
	}
}

func TestFPDUPrefix(t *testing.T) {
	for _, c := range []struct {
		hdr           []byte
		ulpdu, hdrLen int
	}{
		{AppendTagged(nil, OpWrite, true, 1, 2), 14 + 5, TaggedLen},
		{AppendTagged(nil, OpReadResponse, false, 1, 2), 14, TaggedLen},
		{AppendUntagged(nil, OpSendSEInv, true, 9, QNSend, 1, 0), 18 + 300, UntaggedLen},
		{AppendReadRequest(nil, &ReadRequest{MSN: 1}), ReadRequestLen, ReadRequestLen},
		{AppendTerminate(nil, &Terminate{MSN: 1}), TerminateLen, UntaggedLen},
	} {
		b := AppendMPALen(nil, 0)
		b = append(b, c.hdr...)
		PutMPALen(b, c.ulpdu)
		if u, h := ParseFPDUPrefix(b); u != c.ulpdu || h != c.hdrLen {
			t.Errorf("% x: ULPDU %d header %d, want %d %d", b[:FPDUPrefixLen], u, h, c.ulpdu, c.hdrLen)
		}
	}
}

// TestTerminateFromSiw parses the Terminates Linux siw sent in the VM
// (internal/testbed TestVMCaptureSiwTerminate): in siw's bitfield layout,
// with the segment's payload length where the RFC has the DDP segment
// length, and for a Read Request the header siw rebuilt (MSN = read size).
func TestTerminateFromSiw(t *testing.T) {
	cases := []struct {
		file             string
		layer, typ, code uint8
		m, d, r          bool
		n                int
	}{
		{"siw-readreq.bin", LayerRDMAP, RDMAPTypeProtection, RDMAPCodeInvalidSTag, true, true, true, 2 + ReadRequestLen},
		{"siw-send-msn.bin", LayerDDP, DDPTypeUntagged, DDPCodeMSNRange, true, true, false, 2 + UntaggedLen},
	}
	for _, c := range cases {
		b, err := os.ReadFile("testdata/terminate/" + c.file)
		if err != nil {
			t.Fatal(err)
		}
		ulpdu, _ := ParseFPDUPrefix(b)
		if FPDULen(ulpdu) != len(b) || CRCFromTrailer(b[len(b)-CRCSize:]) != UpdateCRC(0, b[:len(b)-CRCSize]) {
			t.Fatalf("%s: not one FPDU with a good CRC", c.file)
		}
		tm, err := ParseTerminate(b[MPALenSize : MPALenSize+ulpdu])
		if err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
		if !tm.SiwLayout || tm.Layer != c.layer || tm.Type != c.typ || tm.Code != c.code ||
			tm.SegLenValid != c.m || tm.HasDDP != c.d || tm.HasRDMAP != c.r || len(tm.Terminated) != c.n {
			t.Errorf("%s: %+v (%s), %d header bytes", c.file, tm, tm.String(), len(tm.Terminated))
		}
	}
}

// TestTerminatedLen: which headers our Terminate carries per error.
func TestTerminatedLen(t *testing.T) {
	seg := func(h []byte) []byte { return append(AppendMPALen(nil, len(h)), h...) }
	rr := seg(AppendReadRequest(nil, &ReadRequest{MSN: 1, SourceSTag: 7}))
	send := seg(AppendUntagged(nil, OpSend, true, 0, QNSend, 1, 0))
	wr := seg(AppendTagged(nil, OpWrite, true, 1, 2))
	for _, c := range []struct {
		name             string
		layer, typ, code uint8
		seg              []byte
		n                int
		r                bool
	}{
		{"RDMAP protection on a Read Request", LayerRDMAP, RDMAPTypeProtection, RDMAPCodeInvalidSTag, rr, 2 + ReadRequestLen, true},
		{"DDP error on a Read Request", LayerDDP, DDPTypeUntagged, DDPCodeMSNRange, rr, 2 + UntaggedLen, false},
		{"RDMAP protection on a Write", LayerRDMAP, RDMAPTypeProtection, RDMAPCodeAccessRights, wr, 2 + TaggedLen, false},
		{"DDP tagged error", LayerDDP, DDPTypeTagged, DDPCodeTaggedBaseBounds, wr, 2 + TaggedLen, false},
		{"DDP untagged error", LayerDDP, DDPTypeUntagged, DDPCodeNoBuffer, send, 2 + UntaggedLen, false},
		{"opcode", LayerRDMAP, RDMAPTypeRemoteOp, RDMAPCodeOpcode, wr, 0, false},
		{"DDP version", LayerDDP, DDPTypeUntagged, DDPCodeUntaggedVersion, send, 0, false},
		{"catastrophic", LayerRDMAP, RDMAPTypeCatastrophic, RDMAPCodeUnspecified, send, 0, false},
		{"MPA CRC", LayerLLP, 0, LLPCodeCRC, send, 0, false},
		{"no header", LayerDDP, DDPTypeUntagged, DDPCodeNoBuffer, nil, 0, false},
		{"truncated Read Request", LayerRDMAP, RDMAPTypeProtection, RDMAPCodeInvalidSTag, rr[:30], 0, false},
	} {
		tm := Terminate{MSN: 1, Layer: c.layer, Type: c.typ, Code: c.code}
		n := tm.TerminatedLen(c.seg)
		if n != c.n || tm.SegLenValid != (n > 0) || tm.HasDDP != (n > 0) || tm.HasRDMAP != c.r {
			t.Errorf("%s: %d bytes M=%v D=%v R=%v, want %d R=%v", c.name, n, tm.SegLenValid, tm.HasDDP, tm.HasRDMAP, c.n, c.r)
			continue
		}
		tm.Terminated = c.seg[:n]
		got, err := ParseTerminate(AppendTerminate(nil, &tm))
		if err != nil || !bytes.Equal(got.Terminated, tm.Terminated) || got.HasRDMAP != c.r || got.SiwLayout {
			t.Errorf("%s: parsed back %+v, %v", c.name, got, err)
		}
	}
}
