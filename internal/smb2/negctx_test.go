package smb2

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

var testSalt = [32]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}

func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		panic(err)
	}
	return b
}

// response311 is a 3.1.1 NEGOTIATE response as ksmbd sends it: no
// security buffer, contexts from offset 128 (preauth with a 32-byte salt,
// encryption, signing).
func response311(cipher, signing uint16) []byte {
	b := response(Dialect311)[:HeaderLen+64]
	body := b[HeaderLen:]
	binary.LittleEndian.PutUint16(body[6:], 3)
	binary.LittleEndian.PutUint32(body[60:], HeaderLen+64)
	b = AppendPreauthContext(b, []uint16{HashSHA512}, testSalt[:])
	b = pad8(b, 0)
	b = AppendNegotiateContext(b, ContextEncryption, []uint16{cipher})
	b = pad8(b, 0)
	return AppendNegotiateContext(b, ContextSigning, []uint16{signing})
}

func TestNegotiateRequest311(t *testing.T) {
	guid := [16]byte{0xaa, 0xbb}
	prefix := []byte("ahead") // the message need not start at 0 in b
	req := AppendNegotiateRequest311(append([]byte(nil), prefix...), 7, guid,
		[]uint16{Dialect202, Dialect210, Dialect300, Dialect302, Dialect311}, testSalt)
	if !bytes.HasPrefix(req, prefix) {
		t.Fatal("prefix overwritten")
	}
	req = req[len(prefix):]
	want := unhex(`
		fe534d42 4000 0000 00000000 0000 0100 00000000 00000000 0700000000000000 00000000 00000000 0000000000000000 00000000000000000000000000000000
		2400 0500 0100 0000 00000000 aabb0000000000000000000000000000 70000000 0300 0000
		0202 1002 0003 0203 1103 0000
		0100 2600 00000000 0100 2000 0100 0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20 0000
		0200 0a00 00000000 0400 0200 0100 0400 0300 000000000000
		0800 0800 00000000 0300 0200 0100 0000`)
	if !bytes.Equal(req, want) {
		t.Fatalf("request\n got % x\nwant % x", req, want)
	}
	if ds := Dialects(req); len(ds) != 5 || ds[4] != Dialect311 {
		t.Fatalf("dialects %x", ds)
	}
}

func TestNegotiateResponse311(t *testing.T) {
	r, err := ParseNegotiateResponse(response311(CipherAES256GCM, SigningAESGMAC))
	if err != nil {
		t.Fatal(err)
	}
	if DialectName(r.Dialect) != "3.1.1" || r.PreauthHash != HashSHA512 || r.Cipher != CipherAES256GCM || r.Signing != SigningAESGMAC ||
		!r.Has(ContextPreauthIntegrity) || !r.Has(ContextEncryption) || !r.Has(ContextSigning) || r.Has(ContextCompression) {
		t.Fatalf("%+v", r)
	}
	if HashName(r.PreauthHash) != "SHA-512" || CipherName(r.Cipher) != "AES-256-GCM" || SigningName(r.Signing) != "AES-GMAC" ||
		CipherName(0) != "none" || SigningName(0x1234) != "0x1234" {
		t.Fatal("names")
	}
	full := response311(CipherAES128CCM, SigningHMACSHA256)
	for _, c := range []struct {
		name string
		b    []byte
		want error
	}{
		{"truncated context", full[:len(full)-1], ErrShort},
		{"offset inside the body", func() []byte {
			b := bytes.Clone(full)
			binary.LittleEndian.PutUint32(b[HeaderLen+60:], HeaderLen+8)
			return b
		}(), ErrMalformed},
		{"offset past the end", func() []byte {
			b := bytes.Clone(full)
			binary.LittleEndian.PutUint32(b[HeaderLen+60:], 1<<20)
			return b
		}(), ErrMalformed},
		{"more contexts than sent", func() []byte {
			b := bytes.Clone(full)
			binary.LittleEndian.PutUint16(b[HeaderLen+6:], 4)
			return b
		}(), ErrShort},
		{"empty cipher list", func() []byte {
			b := bytes.Clone(full)
			i := bytes.Index(b, []byte{ContextEncryption, 0, 4, 0})
			binary.LittleEndian.PutUint16(b[i+8:], 0)
			return b
		}(), ErrMalformed},
	} {
		if _, err := ParseNegotiateResponse(c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

// The context codecs allocate nothing: appending into a buffer with room,
// and parsing.
func TestNegotiateContextAllocs(t *testing.T) {
	buf := make([]byte, 0, 512)
	dialects := []uint16{Dialect300, Dialect302, Dialect311}
	if n := testing.AllocsPerRun(100, func() {
		buf = AppendNegotiateRequest311(buf[:0], 1, [16]byte{}, dialects, testSalt)
	}); n != 0 {
		t.Errorf("AppendNegotiateRequest311: %v allocations", n)
	}
	resp := response311(CipherAES128GCM, SigningAESCMAC)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := ParseNegotiateResponse(resp); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("ParseNegotiateResponse: %v allocations", n)
	}
}

func FuzzNegotiateContexts(f *testing.F) {
	req := AppendNegotiateRequest311(nil, 0, [16]byte{}, []uint16{Dialect302, Dialect311}, testSalt)
	f.Add(req[binary.LittleEndian.Uint32(req[HeaderLen+28:]):])
	f.Add(response311(CipherAES128GCM, SigningAESGMAC))
	f.Add(response311(0, SigningHMACSHA256)[:HeaderLen+64+20])
	f.Add([]byte{1, 0, 0xff, 0xff, 0, 0, 0, 0, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		rest := b
		for len(rest) > 0 {
			typ, data, next, err := NextNegotiateContext(rest)
			if err != nil {
				break
			}
			if len(next) >= len(rest) || len(data) > len(rest)-negotiateContextHeader {
				t.Fatalf("context %d: data %d, rest %d of %d", typ, len(data), len(next), len(rest))
			}
			if h, salt, err := ParsePreauthContext(data); err == nil && (len(salt) > len(data) || h != binary.LittleEndian.Uint16(data[4:])) {
				t.Fatal("preauth context")
			}
			ParseContextList(data)
			rest = next
		}
		r, err := ParseNegotiateResponse(b)
		if err == nil && r.Contexts != 0 && r.Dialect != Dialect311 {
			t.Fatalf("contexts parsed for dialect %x", r.Dialect)
		}
	})
}
