package ctl

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func samples() [][]byte {
	var out [][]byte
	add := func(b []byte) { out = append(out, b) }
	add(AppendHello(nil, 1, &Hello{Min: 1, Max: 1}))
	add(AppendHelloOK(nil, 1, &HelloOK{Version: 1, Daemon: "smbdirectd test"}))
	add(AppendOK(nil, 2, &OK{Value: 42}))
	add(AppendError(nil, 3, &Error{Code: CodeNotFound, Message: "no such connection"}))
	add(AppendDial(nil, 4, &Dial{Addr: "127.0.0.1:5445", TimeoutMS: 5000}))
	add(AppendListen(nil, 5, &Listen{Addr: "127.0.0.1:0"}))
	add(AppendListen(nil, 5, &Listen{Addr: "127.0.0.1:0", Flags: ListenServerChannel}))
	add(AppendListening(nil, 5, &Listening{Listener: 9, Addr: "127.0.0.1:40000"}))
	add(AppendConn(nil, 4, &Conn{Conn: 7, MaxSendSize: 1364, MaxFragmentedSend: 1 << 20, MaxFragmentedRecv: 1 << 20, MaxReadWriteSize: 1 << 20, Remote: "127.0.0.1:5445"}))
	add(AppendClose(nil, 6, &Close{Handle: 7}))
	add(AppendSend(nil, 7, &Send{Conn: 7, Invalidate: 0x1234, PDU: []byte("\xfeSMB...")}))
	add(AppendRegister(nil, 8, &Register{Conn: 7, Access: AccessPeerWrite, Offset: 4096, Length: 1 << 20}))
	add(AppendRegistered(nil, 8, &Registered{Reg: 3, Descriptor: Descriptor{Offset: 1 << 40, Token: 0xabcd, Length: 1 << 20}}))
	add(AppendDeregister(nil, 9, &Deregister{Reg: 3}))
	add(AppendTransfer(nil, TypeRDMAWrite, 10, &Transfer{Conn: 7, FileOffset: 99, Descriptors: []Descriptor{{1, 2, 3}, {4, 5, 6}}}))
	return out
}

func TestRoundTrip(t *testing.T) {
	for _, msg := range samples() {
		h, body, err := ParseHeader(msg)
		if err != nil {
			t.Fatalf("% x: %v", msg, err)
		}
		var got, want any
		switch h.Type {
		case TypeDial:
			got, err = ParseDial(body)
			want = Dial{Addr: "127.0.0.1:5445", TimeoutMS: 5000}
		case TypeConn:
			got, err = ParseConn(body)
			want = Conn{Conn: 7, MaxSendSize: 1364, MaxFragmentedSend: 1 << 20, MaxFragmentedRecv: 1 << 20, MaxReadWriteSize: 1 << 20, Remote: "127.0.0.1:5445"}
		case TypeRDMAWrite:
			got, err = ParseTransfer(body, nil)
			want = Transfer{Conn: 7, FileOffset: 99, Descriptors: []Descriptor{{1, 2, 3}, {4, 5, 6}}}
		case TypeRegistered:
			got, err = ParseRegistered(body)
			want = Registered{Reg: 3, Descriptor: Descriptor{Offset: 1 << 40, Token: 0xabcd, Length: 1 << 20}}
		case TypeSend:
			var s Send
			s, err = ParseSend(body)
			if !bytes.Equal(s.PDU, []byte("\xfeSMB...")) || s.Invalidate != 0x1234 {
				t.Fatalf("send %+v", s)
			}
			continue
		default:
			_, err = parseAny(h.Type, body)
			if err != nil {
				t.Fatalf("type %#x: %v", h.Type, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("type %#x: got %+v, %v; want %+v", h.Type, got, err, want)
		}
	}
	// Exact bytes of one message, as documented in docs/smbdirectd.md.
	b := AppendClose(nil, 0x0102030405060708, &Close{Handle: 7})
	want := []byte{0x53, 0x44, 1, TypeClose, 24, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1, 7, 0, 0, 0, 0, 0, 0, 0}
	if !bytes.Equal(b, want) {
		t.Fatalf("Close: % x, want % x", b, want)
	}
}

func TestRefuse(t *testing.T) {
	good := AppendDial(nil, 1, &Dial{Addr: "x"})
	for name, b := range map[string][]byte{
		"short":        good[:10],
		"bad-magic":    append([]byte{0, 0}, good[2:]...),
		"version":      append(append([]byte{}, good[:2]...), append([]byte{2}, good[3:]...)...),
		"length-lies":  append(append([]byte{}, good...), 0),
		"body-short":   Finish(append(AppendHeader(nil, TypeDial, 1), 1, 0), 0),
		"extra-bytes":  Finish(append(append([]byte{}, good...), 9), 0),
		"no-desc":      AppendTransfer(nil, TypeRDMARead, 1, &Transfer{}),
		"descs-beyond": Finish(append(AppendHeader(nil, TypeRDMARead, 1), make([]byte, 16)...), 0),
	} {
		h, body, err := ParseHeader(b)
		if err == nil {
			_, err = parseAny(h.Type, body)
		}
		if !errors.Is(err, ErrShort) && !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// parseAny parses body as the request or reply type typ.
func parseAny(typ uint8, body []byte) (any, error) {
	switch typ {
	case TypeHello:
		return ParseHello(body)
	case TypeHelloOK:
		return ParseHelloOK(body)
	case TypeOK:
		return ParseOK(body)
	case TypeError:
		return ParseError(body)
	case TypeDial:
		return ParseDial(body)
	case TypeListen:
		return ParseListen(body)
	case TypeListening:
		return ParseListening(body)
	case TypeConn:
		return ParseConn(body)
	case TypeClose:
		return ParseClose(body)
	case TypeSend:
		return ParseSend(body)
	case TypeRegister:
		return ParseRegister(body)
	case TypeRegistered:
		return ParseRegistered(body)
	case TypeDeregister:
		return ParseDeregister(body)
	case TypeRDMAWrite, TypeRDMARead:
		return ParseTransfer(body, nil)
	}
	return nil, ErrMalformed
}

// FuzzMessage feeds arbitrary datagrams to every parser: no panic, bounded
// results.
func FuzzMessage(f *testing.F) {
	for _, s := range samples() {
		f.Add(s)
	}
	f.Add(AppendDial(nil, 4, &Dial{Addr: "127.0.0.1:5445", Flags: DialClientChannel}))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, body, err := ParseHeader(b)
		if err != nil {
			return
		}
		for _, typ := range []uint8{h.Type, TypeHello, TypeDial, TypeConn, TypeSend, TypeRegister, TypeRDMAWrite, TypeError} {
			v, err := parseAny(typ, body)
			if tr, ok := v.(Transfer); ok && err == nil && (len(tr.Descriptors) == 0 || len(tr.Descriptors) > MaxDescriptors) {
				t.Fatalf("%d descriptors accepted", len(tr.Descriptors))
			}
		}
	})
}

// TestDefaultSocketMatchesC: the C client cannot import the constant, so
// its copy in clib/smbdirect.h is held to it here.
func TestDefaultSocketMatchesC(t *testing.T) {
	h, err := os.ReadFile(filepath.Join("..", "..", "clib", "smbdirect.h"))
	if err != nil {
		t.Fatal(err)
	}
	want := `#define SDD_DEFAULT_SOCKET "` + DefaultSocket + `"`
	for line := range strings.Lines(string(h)) {
		if strings.HasPrefix(line, "#define SDD_DEFAULT_SOCKET ") {
			if got := strings.TrimSpace(line); got != want {
				t.Fatalf("clib/smbdirect.h has %s, want %s", got, want)
			}
			return
		}
	}
	t.Fatal("clib/smbdirect.h defines no SDD_DEFAULT_SOCKET")
}

// TestListenFlags: Flags 0 adds nothing to the body (older daemons parse
// it), a set flag is a u32 after the address, and any other tail is
// malformed.
func TestListenFlags(t *testing.T) {
	plain := AppendListen(nil, 5, &Listen{Addr: "a:1"})
	want := []byte{0x53, 0x44, 1, TypeListen, 21, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 3, 0, 'a', ':', '1'}
	if !bytes.Equal(plain, want) {
		t.Fatalf("Listen without flags: % x, want % x", plain, want)
	}
	withFlags := AppendListen(nil, 5, &Listen{Addr: "a:1", Flags: ListenServerChannel})
	if want := append(append([]byte{}, want...), 1, 0, 0, 0); !bytes.Equal(Finish(want, 0), withFlags) {
		t.Fatalf("Listen with flags: % x, want % x", withFlags, want)
	}
	for _, tc := range []struct {
		msg   []byte
		flags uint32
	}{{plain, 0}, {withFlags, ListenServerChannel}} {
		_, body, err := ParseHeader(tc.msg)
		if err != nil {
			t.Fatal(err)
		}
		m, err := ParseListen(body)
		if err != nil || m.Addr != "a:1" || m.Flags != tc.flags {
			t.Fatalf("% x: %+v, %v", tc.msg, m, err)
		}
	}
	_, body, _ := ParseHeader(plain)
	for _, extra := range []int{1, 2, 3, 5, 8} {
		b := append(append([]byte{}, body...), make([]byte, extra)...)
		if _, err := ParseListen(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%d bytes after the address: %v, want ErrMalformed", extra, err)
		}
	}
}

// TestDialFlags: as for Listen, Flags 0 adds nothing (older daemons parse
// the Dial), a set flag is a u32 after the address, other tails are
// malformed.
func TestDialFlags(t *testing.T) {
	plain := AppendDial(nil, 4, &Dial{Addr: "a:1", TimeoutMS: 7})
	want := []byte{0x53, 0x44, 1, TypeDial, 25, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 3, 0, 'a', ':', '1'}
	if !bytes.Equal(plain, want) {
		t.Fatalf("Dial without flags: % x, want % x", plain, want)
	}
	withFlags := AppendDial(nil, 4, &Dial{Addr: "a:1", TimeoutMS: 7, Flags: DialClientChannel})
	if want := append(append([]byte{}, want...), 1, 0, 0, 0); !bytes.Equal(Finish(want, 0), withFlags) {
		t.Fatalf("Dial with flags: % x, want % x", withFlags, want)
	}
	for _, tc := range []struct {
		msg   []byte
		flags uint32
	}{{plain, 0}, {withFlags, DialClientChannel}} {
		_, body, err := ParseHeader(tc.msg)
		if err != nil {
			t.Fatal(err)
		}
		m, err := ParseDial(body)
		if err != nil || m != (Dial{Addr: "a:1", TimeoutMS: 7, Flags: tc.flags}) {
			t.Fatalf("% x: %+v, %v", tc.msg, m, err)
		}
	}
	_, body, _ := ParseHeader(plain)
	for _, extra := range []int{1, 2, 3, 5, 8} {
		b := append(append([]byte{}, body...), make([]byte, extra)...)
		if _, err := ParseDial(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%d bytes after the address: %v, want ErrMalformed", extra, err)
		}
	}
}
