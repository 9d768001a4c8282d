package smb2

import (
	"encoding/binary"
	"errors"
	"testing"
)

func response(dialect uint16) []byte {
	b := make([]byte, HeaderLen+65)
	copy(b, "\xfeSMB")
	binary.LittleEndian.PutUint16(b[4:], HeaderLen)
	binary.LittleEndian.PutUint32(b[16:], 1) // SERVER_TO_REDIR
	body := b[HeaderLen:]
	binary.LittleEndian.PutUint16(body, 65)
	binary.LittleEndian.PutUint16(body[2:], 1)
	binary.LittleEndian.PutUint16(body[4:], dialect)
	binary.LittleEndian.PutUint32(body[32:], 8<<20)
	return b
}

func TestNegotiate(t *testing.T) {
	req := AppendNegotiateRequest(nil, 0, [16]byte{1}, []uint16{Dialect202, Dialect302})
	if len(req) != HeaderLen+36+4 || req[HeaderLen] != 36 || req[HeaderLen+2] != 2 || req[HeaderLen+36+2] != 0x02 || req[HeaderLen+36+3] != 0x03 {
		t.Fatalf("request % x", req)
	}
	r, err := ParseNegotiateResponse(response(Dialect302))
	if err != nil || r.Dialect != Dialect302 || r.MaxReadSize != 8<<20 || DialectName(r.Dialect) != "3.0.2" {
		t.Fatalf("%+v %v", r, err)
	}
	if _, err := ParseNegotiateResponse(req); !errors.Is(err, ErrMalformed) {
		t.Fatalf("request parsed as response: %v", err)
	}
}

func FuzzNegotiateResponse(f *testing.F) {
	f.Add(response(Dialect302))
	f.Add(response(Dialect210)[:80])
	f.Add(AppendNegotiateRequest(nil, 1, [16]byte{}, []uint16{Dialect202, Dialect302}))
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = Describe(b)
		if ds := Dialects(b); len(ds) > len(b)/2 {
			t.Fatalf("%d dialects from %d bytes", len(ds), len(b))
		}
		r, err := ParseNegotiateResponse(b)
		if err == nil && r.Status == 0 && len(b) < HeaderLen+64 {
			t.Fatal("accepted a short response")
		}
	})
}
