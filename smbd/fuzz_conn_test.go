package smbd

import (
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/smbd/internal/wire"
)

// FuzzConnReceive runs the stateful receive path of a negotiated Conn
// (credits, reassembly, queueing) on messages from a raw peer, built from
// the input: each starts with a selector byte; an even one makes a data
// transfer message from the next 9 bytes (credits granted, flags,
// remaining length, payload length up to 2 KiB), an odd one sends the next
// n bytes as they are. The Conn must deliver whole messages or end with
// an error: no panic, no hang, no goroutine left behind.
func FuzzConnReceive(f *testing.F) {
	msg := func(granted, flags uint16, remaining uint32, n uint8) []byte {
		b := []byte{0}
		b = binary.LittleEndian.AppendUint16(b, granted)
		b = binary.LittleEndian.AppendUint16(b, flags)
		b = binary.LittleEndian.AppendUint32(b, remaining)
		return append(b, n)
	}
	f.Add(msg(1, 0, 0, 10))
	f.Add(append(msg(1, 0, 3000, 100), msg(0, 0, 0, 200)...))
	f.Add(append(msg(0, 1, 0, 0), msg(0xffff, 0, 0, 1)...))
	f.Add(append(msg(2, 0, 10, 0), msg(0, 0, 0, 10)...))
	f.Add([]byte{1, 40, 0, 1, 0, 1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		// On the in-memory provider in a synctest bubble: no sockets, a
		// fake clock, and a goroutine left behind fails as a deadlock.
		memHostile(t, func(t *testing.T, env *hostEnv) {
			c, p, _ := negotiated(t, env, nil)
			for sent := 0; len(data) > 0 && sent < 8; sent++ {
				sel := data[0]
				data = data[1:]
				if sel&1 == 1 {
					n := min(int(sel>>1)*4, len(data))
					if n > 0 {
						p.send(data[:n])
					}
					data = data[n:]
					continue
				}
				if len(data) < 9 {
					break
				}
				h := wire.DataTransfer{CreditsGranted: binary.LittleEndian.Uint16(data), Flags: binary.LittleEndian.Uint16(data[2:]),
					RemainingDataLength: binary.LittleEndian.Uint32(data[4:])}
				payload := make([]byte, int(data[8])*8)
				for i := range payload {
					payload[i] = byte(i + sent)
				}
				data = data[9:]
				p.send(dt(h, payload))
			}
			c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			buf := make([]byte, 2<<20)
			for {
				n, err := c.ReadMessage(buf)
				if err != nil {
					if !errors.Is(err, os.ErrDeadlineExceeded) && c.Info().SendCredits < 0 {
						t.Fatalf("negative credits after %v", err)
					}
					break
				}
				if n == 0 || n > c.cfg.MaxFragmentedSize {
					t.Fatalf("ReadMessage returned a %d-byte message (MaxFragmentedSize %d)", n, c.cfg.MaxFragmentedSize)
				}
			}
			c.Close()
		})
	})
}
