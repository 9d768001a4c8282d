package testbed

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// terminateDir holds siw's Terminates, apart from captureDir, whose files are whole rping exchanges.
const terminateDir = "../../iwarp/internal/wire/testdata/terminate"

// TestVMCaptureSiwTerminate makes Linux siw send a Terminate and checks its Hdrct bits and headers
// with RFC 5040 section 4.8 and with siw_send_terminate: the host connects to rping's server on siw and
// sends a message siw must refuse. The files it saves seed wire's Terminate parser.
//   - readreq: an RDMA Read Request for an STag siw does not know. siw reports an RDMAP remote
//     protection error with M, D and R set, the DDP segment length, and the whole Read Request header
//     (18 bytes DDP, 28 bytes RDMAP).
//   - send-msn: a Send with MSN 2 where 1 is due. siw reports a DDP untagged error with M and D set and
//     the 18-byte DDP header only.
func TestVMCaptureSiwTerminate(t *testing.T) {
	cases := []struct {
		name          string
		ulpdu         []byte
		layer, etype  uint8
		code          uint8
		m, d, r       bool
		terminatedLen int // segment length + headers
	}{
		{"readreq", untagged(opReadReq, 1, 1, 0, readRequest(0x1234, 0x5000, 64, 0xdeadbe01, 0x10000)), 0, 1, 0x00, true, true, true, 2 + 18 + 28},
		{"send-msn", untagged(opSend, 0, 2, 0, make([]byte, 16)), 1, 2, 0x03, true, true, false, 2 + 18},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			vm := StartT(t, Options{
				Forwards: []Forward{{GuestPort: 7174}},
				GuestScript: fmt.Sprintf(`
rdma link add siw0 type siw netdev eth0 || exit 1
rping -s -a %s -p 7174 -C 1 -S 100 -v & pid=$!
while ! netstat -ltn | grep -q ':7174 '; do sleep 0.1; done
echo LISTENING
wait $pid`, GuestIP)})
			ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
			defer cancel()
			deadline, _ := ctx.Deadline()
			if _, err := vm.WaitFor(ctx, "LISTENING"); err != nil {
				t.Fatal(err)
			}
			conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", vm.HostPort(7174)))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			p := newPeer(conn, deadline)
			flags := uint16(mpaFlagEnh | mpaFlagCRC | 2)
			if err := p.write(appendMPA(nil, mpaKeyReq, flags, irdOrd(1, 1))); err != nil {
				t.Fatal(err)
			}
			if _, err := p.readMPA(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(siwResponderGrace) // see siwServer
			p.rx.Reset()
			p.crc = true
			if err := p.writeFPDU(c.ulpdu); err != nil {
				t.Fatal(err)
			}
			f, err := p.readFPDU()
			if err != nil {
				t.Fatal(err)
			}
			if f.Tagged || f.Opcode != opTerminate || f.QN != 2 || f.MSN != 1 || f.MO != 0 || len(f.Payload) < 4 {
				t.Fatalf("want a Terminate, got %v", f)
			}
			t.Logf("siw's Terminate: % x", f.Raw)
			// Linux siw declares the Terminate control with C bitfields (struct iwarp_terminate, layer:4
			// first) that a little-endian build lays out least significant bit first: EType in the
			// high nibble of the first byte, Layer in the low one, and M, D, R as 0x01, 0x02, 0x04 of the
			// third byte, where RFC 5040 4.8 has Layer high, EType low and M, D, R as 0x80, 0x40, 0x20.
			tc := f.Payload[:4]
			layer, etype, code := tc[0]&0xf, tc[0]>>4, tc[1]
			m, d, r := tc[2]&0x01 != 0, tc[2]&0x02 != 0, tc[2]&0x04 != 0
			if layer != c.layer || etype != c.etype || code != c.code || m != c.m || d != c.d || r != c.r || tc[2]&0xf8 != 0 {
				t.Fatalf("Terminate control % x: layer %d type %d code %#x M=%v D=%v R=%v, want %d %d %#x %v %v %v",
					tc, layer, etype, code, m, d, r, c.layer, c.etype, c.code, c.m, c.d, c.r)
			}
			if got := len(f.Payload) - 4; got != c.terminatedLen {
				t.Errorf("%d bytes of terminated headers, want %d", got, c.terminatedLen)
			}
			// siw's DDP segment length is the segment's payload length (siw_send_terminate subtracts
			// the header), 0 and 16 here. The headers are ours, except that siw rebuilds a failed Read
			// Request from its work queue entry and puts the read size where the MSN was.
			hdr := f.Payload[4+2:]
			want := bytes.Clone(c.ulpdu[:len(hdr)])
			if c.name == "readreq" {
				copy(want[10:], hdr[10:14])
				if be32(hdr[10:]) != 64 {
					t.Errorf("siw's rebuilt Read Request has MSN %d, expected the read size 64", be32(hdr[10:]))
				}
			}
			if seg := int(f.Payload[4])<<8 | int(f.Payload[5]); seg != len(c.ulpdu)-c.terminatedLen+2 {
				t.Errorf("DDP segment length %d, want the payload length %d", seg, len(c.ulpdu)-c.terminatedLen+2)
			}
			if !bytes.Equal(hdr, want) {
				t.Errorf("terminated headers % x\nwant                   % x", hdr, want)
			}
			conn.Close()
			vm.Wait()
			if *updateCaptures {
				if err := os.MkdirAll(terminateDir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(terminateDir, "siw-"+c.name+".bin"), f.Raw, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
