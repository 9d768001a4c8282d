package client

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/smbdirect/smbdirect/internal/leakcheck"
	"github.com/smbdirect/smbdirect/smbd"
)

// pipeChannel is a Channel over one end of a net.Pipe: enough for the
// framing of WriteMessage and ReadMessage, which use only the stream.
// Closing the pipe at the end of the test ends a peer still writing.
func pipeChannel(t *testing.T) (*Channel, net.Conn) {
	leakcheck.Check(t) // registered first, so it runs after the pipe is closed
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return &Channel{Conn: a}, b
}

func TestChannelWriteMessageFraming(t *testing.T) {
	ch, peer := pipeChannel(t)
	pdu := bytes.Repeat([]byte{0xfe}, 0x010203)
	errc := make(chan error, 1)
	go func() { errc <- ch.WriteMessage(pdu) }()
	got := make([]byte, 4+len(pdu))
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:4], []byte{0, 0x01, 0x02, 0x03}) || !bytes.Equal(got[4:], pdu) {
		t.Fatalf("header % x, body equal %v", got[:4], bytes.Equal(got[4:], pdu))
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// Lengths a header cannot carry are refused before anything is written.
	if err := ch.WriteMessage(nil); !errors.Is(err, smbd.ErrFraming) {
		t.Errorf("empty PDU: %v", err)
	}
	if err := ch.WriteMessage(make([]byte, 1<<24)); !errors.Is(err, smbd.ErrMessageTooLarge) {
		t.Errorf("2^24-byte PDU: %v", err)
	}
}

func TestChannelReadMessageFraming(t *testing.T) {
	for _, c := range []struct {
		name   string
		stream []byte
		buf    int
		want   []byte
		err    error
	}{
		{"ok", []byte{0, 0, 0, 3, 'a', 'b', 'c'}, 8, []byte("abc"), nil},
		{"exact buffer", []byte{0, 0, 0, 3, 'a', 'b', 'c'}, 3, []byte("abc"), nil},
		{"first byte", []byte{0xfe, 0, 0, 3, 'a', 'b', 'c'}, 8, nil, smbd.ErrFraming},
		{"zero length", []byte{0, 0, 0, 0}, 8, nil, smbd.ErrFraming},
		{"short buffer", []byte{0, 0, 1, 0}, 255, nil, io.ErrShortBuffer},
		{"cut header", []byte{0, 0}, 8, nil, io.ErrUnexpectedEOF},
	} {
		t.Run(c.name, func(t *testing.T) {
			ch, peer := pipeChannel(t)
			go func() {
				peer.Write(c.stream)
				peer.Close()
			}()
			buf := make([]byte, c.buf)
			n, err := ch.ReadMessage(buf)
			if !errors.Is(err, c.err) || (c.err == nil && !bytes.Equal(buf[:n], c.want)) {
				t.Fatalf("ReadMessage: %q, %v; want %q, %v", buf[:n], err, c.want, c.err)
			}
			if c.err != nil && n != 0 {
				t.Fatalf("%d bytes with error %v", n, err)
			}
		})
	}
}
