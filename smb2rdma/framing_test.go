package smb2rdma

import (
	"bytes"
	"errors"
	"net"
	"testing"

	"github.com/smbdirect/smbdirect/smbd"
)

// msgChannel is a Channel that delivers messages of n bytes, left as
// they are in the buffer (zeros: not SMB2, so they pass through as is).
type msgChannel struct {
	net.Conn // nil: only the methods below are used
	n        int
}

func (c *msgChannel) WriteMessage([]byte) error       { return nil }
func (c *msgChannel) ReadMessage([]byte) (int, error) { return c.n, nil }
func (c *msgChannel) MaxReadWriteSize() int           { return 1 << 20 }
func (c *msgChannel) MaxMessageSize() int             { return c.n }
func (c *msgChannel) Register(int, bool, []byte) (Region, error) {
	return nil, errors.New("not here")
}

// TestReadFraming: Read puts the exact Direct TCP header before a
// received PDU, and refuses one whose length 24 bits cannot carry instead
// of writing a wrapped length.
func TestReadFraming(t *testing.T) {
	c := WrapChannel(&msgChannel{n: 0x010203}, nil)
	got := make([]byte, 4+0x010203)
	if n, err := c.Read(got); err != nil || n != len(got) {
		t.Fatalf("Read: %d, %v", n, err)
	}
	if !bytes.Equal(got[:4], []byte{0, 0x01, 0x02, 0x03}) {
		t.Fatalf("header % x", got[:4])
	}
	c = WrapChannel(&msgChannel{n: 1 << 24}, nil)
	if n, err := c.Read(got); !errors.Is(err, smbd.ErrMessageTooLarge) || n != 0 {
		t.Fatalf("2^24-byte PDU: %d, %v", n, err)
	}
}
