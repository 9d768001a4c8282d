package smb2rdma

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/framing"
	"github.com/smbdirect/smbdirect/internal/smb2"
	"github.com/smbdirect/smbdirect/iwarp"
	"github.com/smbdirect/smbdirect/smbd"
)

func cfg() *smbd.Config {
	return &smbd.Config{Provider: iwarp.New(iwarp.Config{FirstSendDelay: -1})}
}

func pair(t *testing.T) (*smbd.Conn, *smbd.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	l, err := smbd.Listen(ctx, "127.0.0.1:0", cfg())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ch := make(chan *smbd.Conn, 1)
	go func() {
		c, err := l.AcceptSMBD(ctx)
		if err != nil {
			t.Error(err)
		}
		ch <- c
	}()
	c, err := smbd.Dial(ctx, l.Addr().String(), cfg())
	if err != nil {
		t.Fatal(err)
	}
	s := <-ch
	if s == nil {
		t.FailNow()
	}
	t.Cleanup(func() { s.Close() })
	return c, s
}

// fakeServer answers NEGOTIATE with dialect, and READ/WRITE on one file,
// using the smbd offload API for RDMA channels: RDMA Write from the file
// (sendfile) for READ, RDMA Read into memory for WRITE, Send with
// Invalidate for _V1_INVALIDATE. It records the channel of each request.
type fakeServer struct {
	c        *smbd.Conn
	dialect  uint16
	file     *os.File
	mu       sync.Mutex // the race detector cannot see the network's ordering
	channels []uint32
	written  map[uint64][]byte
}

func (s *fakeServer) seen() []uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]uint32(nil), s.channels...)
}

func (s *fakeServer) data(off uint64) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.written[off]
}

func response(req []byte, body []byte) []byte {
	b := append([]byte(nil), req[:smb2.HeaderLen]...)
	binary.LittleEndian.PutUint32(b[16:], smb2.FlagResponse)
	binary.LittleEndian.PutUint32(b[8:], 0)
	return append(b, body...)
}

func (s *fakeServer) serve(ctx context.Context) error {
	buf := make([]byte, 2<<20)
	for {
		n, err := s.c.ReadMessage(buf)
		if err != nil {
			return err
		}
		req := buf[:n]
		h, err := smb2.ParseHeader(req)
		if err != nil {
			return err
		}
		var inv uint32
		var body []byte
		switch h.Command {
		case smb2.CommandNegotiate:
			body = make([]byte, 64)
			binary.LittleEndian.PutUint16(body, 65)
			binary.LittleEndian.PutUint16(body[4:], s.dialect)
		case smb2.CommandRead:
			r, err := smb2.ParseReadRequest(req)
			if err != nil {
				return err
			}
			s.mu.Lock()
			s.channels = append(s.channels, r.Channel)
			s.mu.Unlock()
			rr := []byte{17, 0, smb2.ReadResponseDataOffset, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
			if r.Channel == smb2.ChannelNone {
				data := make([]byte, r.Length)
				s.file.ReadAt(data, int64(r.Offset))
				binary.LittleEndian.PutUint32(rr[4:], r.Length)
				body = append(rr, data...)
				break
			}
			ds, err := smbd.ParseBufferDescriptors(r.ChannelInfo)
			if err != nil {
				return err
			}
			if err := s.c.RDMAWriteFile(ctx, s.file, int64(r.Offset), ds); err != nil {
				return err
			}
			binary.LittleEndian.PutUint32(rr[8:], r.Length) // DataRemaining
			body = rr
			if r.Channel == smb2.ChannelRDMAV1Invalidate {
				inv = ds[0].Token
			}
		case smb2.CommandWrite:
			w, err := smb2.ParseWriteRequest(req)
			if err != nil {
				return err
			}
			s.mu.Lock()
			s.channels = append(s.channels, w.Channel)
			s.mu.Unlock()
			data := w.Data
			if w.Channel != smb2.ChannelNone {
				ds, err := smbd.ParseBufferDescriptors(w.ChannelInfo)
				if err != nil {
					return err
				}
				data = make([]byte, w.RemainingBytes)
				if err := s.c.RDMARead(ctx, data, ds); err != nil {
					return err
				}
				if w.Channel == smb2.ChannelRDMAV1Invalidate {
					inv = ds[0].Token
				}
			}
			s.mu.Lock()
			s.written[w.Offset] = append([]byte(nil), data...)
			s.mu.Unlock()
			body = make([]byte, 16)
			binary.LittleEndian.PutUint16(body, 17)
			binary.LittleEndian.PutUint32(body[4:], uint32(len(data)))
		default:
			return errors.New("unexpected command")
		}
		resp := response(req, body)
		if inv != 0 {
			err = s.c.WriteMessageInvalidate(resp, inv)
		} else {
			err = s.c.WriteMessage(resp)
		}
		if err != nil {
			return err
		}
	}
}

// sendPDU writes pdu framed as on TCP, header and PDU in one write.
func sendPDU(t *testing.T, w io.Writer, pdu []byte) {
	t.Helper()
	framed := make([]byte, framing.HeaderLen, framing.HeaderLen+len(pdu))
	if err := framing.Put(framed, len(pdu)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(append(framed, pdu...)); err != nil {
		t.Fatal(err)
	}
}

// client sends framed PDUs and reads framed responses, as over TCP.
func roundTrip(t *testing.T, c io.ReadWriter, pdu []byte) []byte {
	t.Helper()
	hdr := make([]byte, framing.HeaderLen)
	if err := framing.Put(hdr, len(pdu)); err != nil {
		t.Fatal(err)
	}
	// The header and the PDU in separate writes, as go-smb2 does.
	if _, err := c.Write(hdr); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(pdu); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, hdr); err != nil {
		t.Fatal(err)
	}
	size, ok := framing.Parse(hdr)
	if !ok {
		t.Fatalf("response header % x", hdr)
	}
	resp := make([]byte, size)
	if _, err := io.ReadFull(c, resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

func setup(t *testing.T, dialect uint16) (*Conn, *fakeServer, []byte) {
	cli, srv := pair(t)
	content := make([]byte, 1<<20+100)
	for i := range content {
		content[i] = byte(i * 7 / 3)
	}
	path := filepath.Join(t.TempDir(), "f")
	os.WriteFile(path, content, 0o600)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	s := &fakeServer{c: srv, dialect: dialect, file: f, written: map[uint64][]byte{}}
	done := make(chan error, 1)
	go func() { done <- s.serve(t.Context()) }()
	w := Wrap(cli, nil)
	t.Cleanup(func() {
		w.Close()
		if err := <-done; err != nil && !errors.Is(err, io.EOF) {
			t.Errorf("server: %v", err)
		}
	})
	neg := smb2.AppendNegotiateRequest(nil, 0, [16]byte{}, []uint16{dialect})
	roundTrip(t, w, neg)
	return w, s, content
}

func readReq(id uint64, off uint64, n uint32, flags uint32) []byte {
	b := smb2.AppendHeader(nil, smb2.CommandRead, id, 1, 1, 1, 1)
	binary.LittleEndian.PutUint32(b[16:], flags)
	return smb2.AppendReadRequest(b, &smb2.ReadRequest{Length: n, Offset: off})
}

func writeReq(id uint64, off uint64, data []byte) []byte {
	b := smb2.AppendHeader(nil, smb2.CommandWrite, id, 1, 1, 1, 1)
	return smb2.AppendWriteRequest(b, &smb2.WriteRequest{Offset: off, Data: data})
}

func TestOffloadReadWrite(t *testing.T) {
	w, s, content := setup(t, smb2.Dialect302)
	// A 1 MiB READ: ksmbd-style RDMA channel response, handed back inline.
	resp := roundTrip(t, w, readReq(1, 100, 1<<20, 0))
	r, err := smb2.ParseReadResponse(resp)
	if err != nil || r.DataRemaining != 0 || sha256.Sum256(r.Data) != sha256.Sum256(content[100:100+1<<20]) {
		t.Fatalf("READ response: %d bytes, %+v", len(r.Data), err)
	}
	// A small READ stays inline.
	resp = roundTrip(t, w, readReq(2, 5, 100, 0))
	if r, err := smb2.ParseReadResponse(resp); err != nil || !bytes.Equal(r.Data, content[5:105]) {
		t.Fatal("small READ", err)
	}
	// A 300000-byte WRITE goes by RDMA Read from our copy.
	data := bytes.Repeat([]byte("smbdirect"), 300_000/9)
	roundTrip(t, w, writeReq(3, 777, data))
	if !bytes.Equal(s.data(777), data) {
		t.Fatal("WRITE data differs at the server")
	}
	// A signed READ passes through unchanged.
	resp = roundTrip(t, w, readReq(4, 0, 8192, smb2.FlagSigned))
	if r, err := smb2.ParseReadResponse(resp); err != nil || !bytes.Equal(r.Data, content[:8192]) {
		t.Fatal("signed READ", err)
	}
	want := []uint32{smb2.ChannelRDMAV1Invalidate, smb2.ChannelNone, smb2.ChannelRDMAV1Invalidate, smb2.ChannelNone}
	if !equal(s.seen(), want) {
		t.Fatalf("channels seen by the server %v, want %v", s.channels, want)
	}
	st := w.Stats()
	if st.Reads != 1 || st.Writes != 1 || st.BytesPlaced != 1<<20 || st.BytesFetched != uint64(len(data)) || st.Inline != 2 || st.PeerInvalidated != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// SMB 3.0.0 knows only SMB2_CHANNEL_RDMA_V1 (ksmbd refuses _INVALIDATE
// there); SMB 2.1 has no RDMA channel at all.
func TestOffloadDialects(t *testing.T) {
	w, s, _ := setup(t, smb2.Dialect300)
	roundTrip(t, w, readReq(1, 0, 65536, 0))
	if !equal(s.seen(), []uint32{smb2.ChannelRDMAV1}) || w.Stats().PeerInvalidated != 0 {
		t.Fatalf("3.0.0: channels %v, stats %+v", s.channels, w.Stats())
	}
	w, s, _ = setup(t, smb2.Dialect210)
	roundTrip(t, w, readReq(1, 0, 65536, 0))
	if !equal(s.seen(), []uint32{smb2.ChannelNone}) {
		t.Fatalf("2.1: channels %v", s.channels)
	}
}

func equal(a, b []uint32) bool { return bytes.Equal(u32s(a), u32s(b)) }

func u32s(a []uint32) []byte {
	var b []byte
	for _, v := range a {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return b
}

// writes records each Write call made on it.
type writes struct {
	mu    sync.Mutex
	calls [][]byte
	got   chan struct{}
}

func (w *writes) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.calls = append(w.calls, append([]byte(nil), p...))
	w.mu.Unlock()
	w.got <- struct{}{}
	return len(p), nil
}

// WriteTo hands a READ response made inline again to the writer as its
// header and body, then the registered memory (two writes here, one
// writev on a socket): the data is not assembled into a new message.
// Other PDUs go in one write. Closing the connection ends WriteTo with
// net.ErrClosed, as it ends a Read.
func TestWriteTo(t *testing.T) {
	w, _, content := setup(t, smb2.Dialect302)
	rec := &writes{got: make(chan struct{}, 16)}
	done := make(chan error, 1)
	go func() {
		_, err := w.WriteTo(rec)
		done <- err
	}()
	send := func(pdu []byte) { t.Helper(); sendPDU(t, w, pdu) }
	send(readReq(1, 100, 1<<20, 0))
	<-rec.got
	<-rec.got
	send(readReq(2, 5, 100, 0))
	<-rec.got
	w.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteTo after Close: %v, want net.ErrClosed", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.calls) != 3 || len(rec.calls[0]) != framing.HeaderLen+smb2.ReadResponseDataOffset || len(rec.calls[1]) != 1<<20 {
		t.Fatalf("%d writes, want the 84-byte head and 1 MiB of data, then the small response", len(rec.calls))
	}
	if size, ok := framing.Parse(rec.calls[0]); !ok || size != smb2.ReadResponseDataOffset+1<<20 {
		t.Fatalf("framing header % x", rec.calls[0][:4])
	}
	resp := append(rec.calls[0][framing.HeaderLen:], rec.calls[1]...)
	r, err := smb2.ParseReadResponse(resp)
	if err != nil || r.DataRemaining != 0 || !bytes.Equal(r.Data, content[100:100+1<<20]) {
		t.Fatalf("READ response: %d bytes of data, %v", len(r.Data), err)
	}
	size, ok := framing.Parse(rec.calls[2])
	if !ok || size != len(rec.calls[2])-framing.HeaderLen {
		t.Fatalf("small response framed as %d bytes in a %d-byte write", size, len(rec.calls[2]))
	}
	if r, err := smb2.ParseReadResponse(rec.calls[2][framing.HeaderLen:]); err != nil || !bytes.Equal(r.Data, content[5:105]) {
		t.Fatalf("small READ: %v", err)
	}
	if st := w.Stats(); st.Reads != 1 || st.BytesPlaced != 1<<20 || st.Inline != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// Read hands a READ response made inline again out of the registered
// memory in whatever pieces the reader asks for, the header and the data
// joined across a piece; WriteTo after a partial Read writes the rest.
func TestReadPieces(t *testing.T) {
	w, _, content := setup(t, smb2.Dialect302)
	send := func(pdu []byte) { t.Helper(); sendPDU(t, w, pdu) }
	const size = 300_000
	whole := framing.HeaderLen + smb2.ReadResponseDataOffset + size
	send(readReq(1, 7, size, 0))
	var got []byte
	piece := make([]byte, 1001) // not a divisor of the header's 84 bytes
	for len(got) < whole {
		n, err := w.Read(piece[:min(len(piece), whole-len(got))])
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, piece[:n]...)
	}
	if size, ok := framing.Parse(got); !ok || size != whole-framing.HeaderLen {
		t.Fatalf("framing header % x", got[:4])
	}
	if r, err := smb2.ParseReadResponse(got[framing.HeaderLen:]); err != nil || !bytes.Equal(r.Data, content[7:7+size]) {
		t.Fatalf("READ response read in pieces: %d bytes of data, %v", len(r.Data), err)
	}

	// 50 bytes by Read, the rest by WriteTo.
	send(readReq(2, 11, size, 0))
	head := make([]byte, 50)
	if _, err := io.ReadFull(w, head); err != nil {
		t.Fatal(err)
	}
	rec := &writes{got: make(chan struct{}, 16)}
	done := make(chan error, 1)
	go func() {
		_, err := w.WriteTo(rec)
		done <- err
	}()
	<-rec.got
	<-rec.got
	w.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteTo after Close: %v, want net.ErrClosed", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	// The head's rest, then the registered memory (one writev on a socket).
	rest := bytes.Join(rec.calls, nil)
	if len(rec.calls) != 2 || len(rec.calls[0]) != whole-size-50 || len(rest) != whole-50 {
		t.Fatalf("WriteTo wrote %d bytes in %d writes, want the head's remaining %d, then %d", len(rest), len(rec.calls), whole-size-50, size)
	}
	r, err := smb2.ParseReadResponse(append(head[framing.HeaderLen:], rest...))
	if err != nil || !bytes.Equal(r.Data, content[11:11+size]) {
		t.Fatalf("READ response, Read then WriteTo: %d bytes of data, %v", len(r.Data), err)
	}
}

// A client with one READ in flight at a time gets the same memory for
// each: one buffer is kept while none is registered.
func TestRegistrationReuse(t *testing.T) {
	w, _, content := setup(t, smb2.Dialect302)
	ch := w.ch.(*smbdChannel)
	kept := func() []byte {
		ch.mu.Lock()
		defer ch.mu.Unlock()
		if len(ch.free) != 1 || ch.open != 0 {
			t.Fatalf("%d buffers kept, %d registrations open; want 1 and 0", len(ch.free), ch.open)
		}
		return ch.free[0][:1]
	}
	var first []byte
	for i := range 3 {
		resp := roundTrip(t, w, readReq(uint64(i+1), uint64(i), 1<<20, 0))
		if r, err := smb2.ParseReadResponse(resp); err != nil || !bytes.Equal(r.Data, content[i:i+1<<20]) {
			t.Fatalf("READ %d: %v", i, err)
		}
		if m := kept(); first == nil {
			first = m
		} else if &m[0] != &first[0] {
			t.Fatalf("READ %d registered fresh memory", i)
		}
	}
}
