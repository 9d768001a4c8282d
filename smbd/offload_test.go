package smbd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/rdma"
)

func octx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// The READ direction: the client registers a buffer for the peer's write,
// the server RDMA-writes into it (split over two descriptors) and answers
// with Send with Invalidate, after which the buffer is no longer valid.
func TestOffloadWriteIntoRegisteredBuffer(t *testing.T) {
	cli, srv := pair(t, testConfig(), testConfig())
	ctx := octx(t)
	dst := make([]byte, 1<<20)
	buf, err := cli.Register(dst, PeerWrite)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	d := buf.Descriptor()
	if d.Length != 1<<20 || d.Token != buf.Token() {
		t.Fatalf("descriptor %+v", d)
	}
	// The descriptor list travels in the request as bytes.
	half := d
	half.Length = 300_000
	rest := BufferDescriptor{Offset: d.Offset + 300_000, Token: d.Token, Length: d.Length - 300_000}
	wireList := AppendBufferDescriptors(nil, []BufferDescriptor{half, rest})
	remote, err := ParseBufferDescriptors(wireList)
	if err != nil || len(remote) != 2 || remote[1] != rest {
		t.Fatalf("parsed %+v, %v", remote, err)
	}
	src := pdu(1<<20, 7)
	if err := srv.RDMAWrite(ctx, src, remote); err != nil {
		t.Fatal(err)
	}
	if err := srv.WriteMessageInvalidate([]byte("READ response"), d.Token); err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, 64)
	n, err := cli.ReadMessage(msg)
	if err != nil || string(msg[:n]) != "READ response" {
		t.Fatalf("%q, %v", msg[:n], err)
	}
	if buf.Valid() {
		t.Fatal("buffer still valid after Send with Invalidate")
	}
	if sha256.Sum256(dst) != sha256.Sum256(src) {
		t.Fatal("RDMA-written data differs")
	}
	// An invalidated token can no longer be written: the connection ends
	// with a remote access error at the writer.
	err = srv.RDMAWrite(ctx, src[:10], []BufferDescriptor{{Offset: d.Offset, Token: d.Token, Length: 10}})
	expectRemoteAccess(t, srv, err)
}

// exchange sends one message from a to b, as an SMB2 response follows
// the RDMA transfers of its request.
func exchange(t *testing.T, a, b *Conn) {
	t.Helper()
	if err := a.WriteMessage([]byte("response")); err != nil {
		t.Fatal(err)
	}
	var m [16]byte
	if n, err := b.ReadMessage(m[:]); err != nil || string(m[:n]) != "response" {
		t.Fatalf("exchange: %q, %v", m[:n], err)
	}
}

// expectRemoteAccess checks that a refused transfer ends c's connection
// with an error wrapping rdma.ErrRemoteAccess: at once for a Read, when the
// peer's Terminate arrives for a Write (Writes are not acknowledged).
func expectRemoteAccess(t *testing.T, c *Conn, err error) {
	t.Helper()
	if err == nil {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.ReadMessage(make([]byte, 64))
	}
	if !errors.Is(err, rdma.ErrRemoteAccess) {
		t.Fatalf("got %v, want an error wrapping rdma.ErrRemoteAccess", err)
	}
}

// The WRITE direction: the server RDMA-reads the client's buffer.
func TestOffloadReadFromRegisteredBuffer(t *testing.T) {
	cli, srv := pair(t, testConfig(), testConfig())
	ctx := octx(t)
	src := pdu(777_777, 3)
	buf, err := cli.Register(src, PeerRead)
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, len(src))
	if err := srv.RDMARead(ctx, dst, []BufferDescriptor{buf.Descriptor()}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst, src) {
		t.Fatal("RDMA-read data differs")
	}
	if err := buf.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Valid() {
		t.Fatal("closed buffer still valid")
	}
	// The link still works after offload.
	if err := cli.WriteMessage([]byte("after")); err != nil {
		t.Fatal(err)
	}
	n, err := srv.ReadMessage(dst)
	if err != nil || string(dst[:n]) != "after" {
		t.Fatal(n, err)
	}
}

// File ranges on both sides: the client registers a range of one file for
// the peer's write and a range of another for the peer's read; the server
// moves data file to file.
func TestOffloadFileRanges(t *testing.T) { testOffloadFileRanges(t) }

// The same with the file ranges copied instead of mapped, as on the
// systems without mmap: the outcome is the same once the Buffer is closed.
func TestOffloadFileRangesCopied(t *testing.T) {
	defer func(v bool) { mmapFiles = v }(mmapFiles)
	mmapFiles = false
	testOffloadFileRanges(t)
}

func testOffloadFileRanges(t *testing.T) {
	cli, srv := pair(t, testConfig(), testConfig())
	ctx := octx(t)
	dir := t.TempDir()
	want := pdu(1<<20, 9)
	srcPath := filepath.Join(dir, "server-src")
	if err := os.WriteFile(srcPath, append(make([]byte, 12345), want...), 0o600); err != nil {
		t.Fatal(err)
	}
	sf, _ := os.Open(srcPath)
	defer sf.Close()
	cf, err := os.OpenFile(filepath.Join(dir, "client-dst"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer cf.Close()

	// SMB2 READ: server file -> client file, at an unaligned offset.
	b, err := cli.RegisterFile(cf, 5000, len(want), PeerWrite)
	if err != nil {
		t.Fatal(err)
	}
	if (b.mapped != nil) != mmapFiles || (b.back != nil) == mmapFiles {
		t.Fatalf("mmapFiles %v: mapped %v, copy to write back %v", mmapFiles, b.mapped != nil, b.back != nil)
	}
	if err := srv.RDMAWriteFile(ctx, sf, 12345, []BufferDescriptor{b.Descriptor()}); err != nil {
		t.Fatal(err)
	}
	exchange(t, srv, cli) // the response: the data is in place when it arrives
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(cf.Name())
	if len(got) != 5000+len(want) || !bytes.Equal(got[5000:], want) || !bytes.Equal(got[:5000], make([]byte, 5000)) {
		t.Fatalf("client file: %d bytes, data equal %v", len(got), bytes.Equal(got[5000:], want))
	}

	// SMB2 WRITE: client file -> server file.
	rb, err := cli.RegisterFile(cf, 5000, len(want), PeerRead)
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()
	out, err := os.OpenFile(filepath.Join(dir, "server-dst"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := srv.RDMAReadFile(ctx, out, 4096, []BufferDescriptor{rb.Descriptor()}); err != nil {
		t.Fatal(err)
	}
	got, _ = os.ReadFile(out.Name())
	if sha256.Sum256(got[4096:]) != sha256.Sum256(want) {
		t.Fatal("server file differs")
	}
	// A read-only range cannot be registered past the end of its file.
	if _, err := cli.RegisterFile(sf, 12345, len(want)+1, PeerRead); err == nil {
		t.Fatal("registered beyond the end of a read-only file")
	}
}

func TestOffloadLimits(t *testing.T) {
	cc, sc := testConfig(), testConfig()
	cc.MaxReadWriteSize = 64 << 10
	cli, srv := pair(t, cc, sc)
	ctx := octx(t)
	if cli.Info().MaxReadWriteSize != 64<<10 {
		t.Fatalf("MaxReadWriteSize %d", cli.Info().MaxReadWriteSize)
	}
	if _, err := cli.Register(make([]byte, 64<<10+1), PeerWrite); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("register beyond MaxReadWriteSize: %v", err)
	}
	if _, err := cli.Register(make([]byte, 10), 0); err == nil {
		t.Fatal("registered without access")
	}
	big := []BufferDescriptor{{Offset: 0, Token: 1, Length: 64 << 10}, {Offset: 0, Token: 1, Length: 1}}
	if err := cli.RDMAWrite(ctx, make([]byte, 64<<10+1), big); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("transfer beyond MaxReadWriteSize: %v", err)
	}
	if err := cli.RDMAWrite(ctx, make([]byte, 10), []BufferDescriptor{{Token: 1, Length: 0}}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("zero-length descriptor: %v", err)
	}
	if err := cli.RDMAWrite(ctx, make([]byte, 10), []BufferDescriptor{{Token: 1, Length: 11}}); err == nil {
		t.Fatal("length mismatch accepted")
	}
	if _, err := ParseBufferDescriptors(make([]byte, 17)); !errors.Is(err, ErrProtocol) {
		t.Fatalf("17-byte descriptor list: %v", err)
	}
	if _, err := ParseBufferDescriptors(make([]byte, 16*(MaxDescriptors+1))); !errors.Is(err, ErrProtocol) {
		t.Fatalf("too many descriptors: %v", err)
	}
	_ = srv
}

// A peer's descriptor outside what we registered, or without the right
// access, is refused by the registering side: the transfer fails with a
// remote access error and the connection ends at both ends, cleanly.
func TestOffloadOutsideRegisteredMemory(t *testing.T) {
	for _, tc := range []struct {
		name   string
		access Access
		read   bool
		desc   func(BufferDescriptor) BufferDescriptor
	}{
		{"past-end", PeerWrite, false, func(d BufferDescriptor) BufferDescriptor { d.Offset += 1; return d }},
		{"before-start", PeerWrite, false, func(d BufferDescriptor) BufferDescriptor { d.Offset -= 4096; return d }},
		{"wrong-token", PeerWrite, false, func(d BufferDescriptor) BufferDescriptor { d.Token ^= 0x5a5a; return d }},
		{"write-to-read-only", PeerRead, false, func(d BufferDescriptor) BufferDescriptor { return d }},
		{"read-from-write-only", PeerWrite, true, func(d BufferDescriptor) BufferDescriptor { return d }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli, srv := pair(t, testConfig(), testConfig())
			ctx := octx(t)
			mem := make([]byte, 8192+4096)
			guard := mem[8192:]
			buf, err := cli.Register(mem[:8192], tc.access)
			if err != nil {
				t.Fatal(err)
			}
			defer buf.Close()
			d := tc.desc(buf.Descriptor())
			data := bytes.Repeat([]byte{0xee}, int(d.Length))
			if tc.read {
				err = srv.RDMARead(ctx, data, []BufferDescriptor{d})
			} else {
				err = srv.RDMAWrite(ctx, data, []BufferDescriptor{d})
			}
			expectRemoteAccess(t, srv, err)
			if !bytes.Equal(guard, make([]byte, 4096)) || (tc.access == PeerRead && !bytes.Equal(mem[:8192], make([]byte, 8192))) {
				t.Fatal("memory outside the permitted access was touched")
			}
			// Both ends see the connection gone.
			if _, err := cli.ReadMessage(make([]byte, 64)); err == nil {
				t.Fatal("client connection survived")
			}
			if err := srv.WriteMessage([]byte("x")); err == nil {
				t.Fatal("server connection survived")
			}
		})
	}
}
