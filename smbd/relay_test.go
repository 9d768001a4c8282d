package smbd_test

// A recording TCP relay for close-sequence tests: it sits between an SMB
// Direct client and its server, passes bytes, FINs and resets on as they
// come, and decodes what went by (MPA, then one FPDU per line, with the
// SMB Direct and SMB2 headers of each Send).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Directions of a relay event.
const (
	toServer = "c>s"
	toClient = "s>c"
	noteDir  = "--"
)

// Kinds of wireEvent.
const (
	evMPA    = "MPA"
	evSend   = "Send" // any untagged Send variant
	evOther  = "FPDU" // tagged, Read Request, ...
	evTerm   = "Terminate"
	evFIN    = "FIN"
	evRST    = "RST"
	evNote   = "note"
	evBroken = "broken" // undecodable bytes
)

// wireEvent is one decoded thing the relay saw.
type wireEvent struct {
	At   time.Duration
	Dir  string
	Kind string
	// For Sends after the SMB Direct negotiation: the data transfer
	// header, and the SMB2 command (-1 if none starts in this message).
	Granted, Flags uint16
	DataLen        uint32
	SMB2Cmd        int
	SMB2Resp       bool
	Text           string
}

func (e wireEvent) String() string {
	return fmt.Sprintf("%9.3fms %s %s", float64(e.At.Microseconds())/1000, e.Dir, e.Text)
}

type relay struct {
	start time.Time
	done  chan struct{}

	mu  sync.Mutex
	ev  []wireEvent
	dec map[string]*streamDecoder
}

// startRelay listens on a free port of 127.0.0.1 and relays the first
// connection to target. Its address is what the client dials.
func startRelay(t *testing.T, target string) (*relay, string) {
	t.Helper()
	r, addr, err := startRelayOn(t, "127.0.0.1:0", target)
	if err != nil {
		t.Fatal(err)
	}
	return r, addr
}

// startRelayOn is startRelay on a given address.
func startRelayOn(t *testing.T, listen, target string) (*relay, string, error) {
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, "", err
	}
	r := &relay{start: time.Now(), done: make(chan struct{}),
		dec: map[string]*streamDecoder{toServer: {}, toClient: {}}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(r.done)
		c, err := l.Accept()
		l.Close()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", target)
		if err != nil {
			c.Close()
			return
		}
		// A test that ends with the connection still open (it failed)
		// must not wait for it: the cleanup ends it.
		ended := make(chan struct{})
		defer close(ended)
		go func() {
			select {
			case <-stop:
				c.Close()
				s.Close()
			case <-ended:
			}
		}()
		var pipes sync.WaitGroup
		pipes.Add(2)
		go func() { defer pipes.Done(); r.pipe(toServer, s.(*net.TCPConn), c.(*net.TCPConn)) }()
		go func() { defer pipes.Done(); r.pipe(toClient, c.(*net.TCPConn), s.(*net.TCPConn)) }()
		pipes.Wait()
		c.Close()
		s.Close()
	}()
	t.Cleanup(func() { l.Close(); close(stop); wg.Wait() })
	return r, l.Addr().String(), nil
}

// pipe copies src to dst. A FIN is passed on as a FIN, a reset as a reset.
func (r *relay) pipe(dir string, dst, src *net.TCPConn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			// Recorded before it is passed on, so the record's order is
			// the order in which the receiver could see things.
			r.add(dir, buf[:n])
			if _, werr := dst.Write(buf[:n]); werr != nil {
				r.event(wireEvent{Dir: dir, Kind: evNote, Text: "relay write failed: " + werr.Error()})
			}
		}
		switch {
		case err == nil:
			continue
		case err == io.EOF:
			r.event(wireEvent{Dir: dir, Kind: evFIN, Text: evFIN})
			dst.CloseWrite()
		case errors.Is(err, syscall.ECONNRESET):
			r.event(wireEvent{Dir: dir, Kind: evRST, Text: evRST})
			dst.SetLinger(0)
			dst.Close()
		default:
			r.event(wireEvent{Dir: dir, Kind: evNote, Text: "relay read error: " + err.Error()})
		}
		return
	}
}

func (r *relay) add(dir string, b []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	at := time.Since(r.start)
	for _, e := range r.dec[dir].feed(b) {
		e.At, e.Dir = at, dir
		r.ev = append(r.ev, e)
	}
}

func (r *relay) event(e wireEvent) {
	r.mu.Lock()
	e.At = time.Since(r.start)
	r.ev = append(r.ev, e)
	r.mu.Unlock()
}

func (r *relay) mark(note string) { r.event(wireEvent{Dir: noteDir, Kind: evNote, Text: note}) }

// wait waits until both directions have ended.
func (r *relay) wait(d time.Duration) error {
	select {
	case <-r.done:
		return nil
	case <-time.After(d):
		return fmt.Errorf("relay: the connection did not end within %v", d)
	}
}

func (r *relay) events() []wireEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]wireEvent(nil), r.ev...)
}

func (r *relay) String() string {
	var b strings.Builder
	for _, e := range r.events() {
		b.WriteString(e.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// streamDecoder decodes one direction: the MPA Request or Reply, then
// FPDUs. The CRC field is always there (RFC 5044 keeps it without CRC,
// and Linux siw and this project send it).
type streamDecoder struct {
	buf     []byte
	mpaDone bool
	broken  bool
	sends   int
	midMsg  bool // the last Send had RemainingDataLength > 0
}

// feed adds bytes and returns the events they complete.
func (d *streamDecoder) feed(p []byte) []wireEvent {
	if d.broken {
		return nil
	}
	d.buf = append(d.buf, p...)
	var out []wireEvent
	if !d.mpaDone {
		if len(d.buf) < 20 {
			return nil
		}
		n := 20 + int(binary.BigEndian.Uint16(d.buf[18:]))
		if len(d.buf) < n {
			return nil
		}
		out = append(out, wireEvent{Kind: evMPA, SMB2Cmd: -1,
			Text: fmt.Sprintf("MPA %q flags %04x", d.buf[:16], binary.BigEndian.Uint16(d.buf[16:]))})
		d.buf = d.buf[n:]
		d.mpaDone = true
	}
	for len(d.buf) >= 2 {
		ulen := int(binary.BigEndian.Uint16(d.buf))
		n := 2 + ulen + (4-(2+ulen)%4)%4 + 4
		if len(d.buf) < n {
			break
		}
		out = append(out, d.fpdu(d.buf[2:2+ulen]))
		d.buf = d.buf[n:]
		if out[len(out)-1].Kind == evBroken {
			d.broken = true
			break
		}
	}
	return out
}

// fpdu decodes one ULPDU (DDP/RDMAP header and payload).
func (d *streamDecoder) fpdu(u []byte) wireEvent {
	e := wireEvent{Kind: evOther, SMB2Cmd: -1}
	if len(u) < 2 {
		e.Kind, e.Text = evBroken, fmt.Sprintf("FPDU of %d bytes", len(u))
		return e
	}
	ctrl := binary.BigEndian.Uint16(u)
	op := ctrl & 0xf
	if ctrl&0x8000 != 0 {
		e.Text = fmt.Sprintf("tagged FPDU, opcode %d, %d bytes", op, len(u))
		return e
	}
	if len(u) < 18 {
		e.Kind, e.Text = evBroken, fmt.Sprintf("untagged FPDU of %d bytes", len(u))
		return e
	}
	msn := binary.BigEndian.Uint32(u[10:])
	switch op {
	case 3, 4, 5, 6: // Send, Send with Invalidate, with SE, with SE and Invalidate
	case 7:
		e.Kind, e.Text = evTerm, fmt.Sprintf("Terminate % x", u[18:min(len(u), 22)])
		return e
	default:
		e.Text = fmt.Sprintf("untagged FPDU, opcode %d, MSN %d, %d bytes", op, msn, len(u)-18)
		return e
	}
	e.Kind = evSend
	p := u[18:]
	d.sends++
	if d.sends == 1 {
		e.Text = fmt.Sprintf("Send MSN %d: SMB Direct negotiation, %d bytes", msn, len(p))
		return e
	}
	if len(p) < 20 {
		e.Text = fmt.Sprintf("Send MSN %d: %d bytes", msn, len(p))
		return e
	}
	e.Granted = binary.LittleEndian.Uint16(p[2:])
	e.Flags = binary.LittleEndian.Uint16(p[4:])
	remaining := binary.LittleEndian.Uint32(p[8:])
	off := binary.LittleEndian.Uint32(p[12:])
	e.DataLen = binary.LittleEndian.Uint32(p[16:])
	e.Text = fmt.Sprintf("Send MSN %d: granted %d flags %#x remaining %d data %d", msn, e.Granted, e.Flags, remaining, e.DataLen)
	if e.DataLen > 0 && !d.midMsg && uint64(off)+20 <= uint64(len(p)) && string(p[off:off+4]) == "\xfeSMB" {
		h := p[off:]
		e.SMB2Cmd = int(binary.LittleEndian.Uint16(h[12:]))
		e.SMB2Resp = binary.LittleEndian.Uint32(h[16:])&1 != 0
		kind := "request"
		if e.SMB2Resp {
			kind = "response"
		}
		e.Text += fmt.Sprintf(", SMB2 %s %s", smb2Name(e.SMB2Cmd), kind)
	}
	if e.DataLen > 0 {
		d.midMsg = remaining > 0
	}
	return e
}

var smb2Names = []string{"NEGOTIATE", "SESSION_SETUP", "LOGOFF", "TREE_CONNECT", "TREE_DISCONNECT", "CREATE",
	"CLOSE", "FLUSH", "READ", "WRITE", "LOCK", "IOCTL", "CANCEL", "ECHO", "QUERY_DIRECTORY", "CHANGE_NOTIFY",
	"QUERY_INFO", "SET_INFO", "OPLOCK_BREAK"}

const smb2Logoff = 2

func smb2Name(c int) string {
	if c >= 0 && c < len(smb2Names) {
		return smb2Names[c]
	}
	return fmt.Sprintf("command %d", c)
}

// checkClientCloses checks the end of a recorded connection that the
// client closed after reading the server's last response: the client's
// FIN comes after everything it sent and after that response; the
// server's FIN follows it; neither side sent a Terminate or a reset.
func checkClientCloses(t *testing.T, ev []wireEvent) {
	t.Helper()
	finC, finS, lastResp := -1, -1, -1
	for i, e := range ev {
		switch {
		case e.Kind == evTerm || e.Kind == evRST || e.Kind == evBroken:
			t.Errorf("%s: want a plain TCP close, without Terminate or reset", e)
		case e.Kind == evFIN && e.Dir == toServer:
			finC = i
		case e.Kind == evFIN && e.Dir == toClient:
			finS = i
		case e.Dir == toServer && finC >= 0:
			t.Errorf("%s: client sent after its FIN", e)
		case e.Kind == evSend && e.Dir == toClient && e.SMB2Resp:
			lastResp = i
		}
	}
	switch {
	case finC < 0:
		t.Errorf("the client sent no FIN")
	case finS < finC:
		t.Errorf("the server's FIN (event %d) came before the client's (event %d): the client did not start the close", finS, finC)
	case lastResp > finC:
		t.Errorf("the client's FIN (event %d) came before the last response (event %d)", finC, lastResp)
	}
}

// frame wraps a ULPDU into an FPDU: length, pad, zero CRC field.
func frame(ulpdu []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(ulpdu)))
	b = append(b, ulpdu...)
	b = append(b, make([]byte, (4-len(b)%4)%4)...)
	return append(b, 0, 0, 0, 0)
}

// FuzzStreamDecoder: the decoder survives any bytes, in any pieces.
func FuzzStreamDecoder(f *testing.F) {
	mpa := append([]byte("MPA ID Req Frame"), 0x10, 0x02, 0x00, 0x04, 0x00, 0x01, 0x00, 0x01)
	untagged := func(op byte, msn byte, payload []byte) []byte {
		u := []byte{0x41, 0x40 | op, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, msn, 0, 0, 0, 0}
		return frame(append(u, payload...))
	}
	// An SMB Direct data transfer with the start of an SMB2 LOGOFF response.
	dt := []byte{0xff, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 24, 0, 0, 0, 24, 0, 0, 0, 0, 0, 0, 0}
	smb2 := append([]byte("\xfeSMB"), make([]byte, 20)...)
	smb2[12], smb2[16] = smb2Logoff, 1
	stream := append(append([]byte(nil), mpa...), untagged(3, 1, make([]byte, 20))...)
	stream = append(stream, untagged(3, 2, append(dt, smb2...))...)
	f.Add(stream, 7)
	f.Add(append(append([]byte(nil), mpa...), untagged(7, 1, make([]byte, 28))...), 3)
	f.Add(append(append([]byte(nil), mpa...), frame([]byte{0xc1, 0x40, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 9})...), 1)
	f.Fuzz(func(t *testing.T, b []byte, cut int) {
		var d streamDecoder
		if cut <= 0 || cut > len(b) {
			cut = len(b)
		}
		for len(b) > 0 {
			n := min(cut, len(b))
			for _, e := range d.feed(b[:n]) {
				_ = e.String()
			}
			b = b[n:]
		}
	})
}
