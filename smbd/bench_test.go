package smbd

import (
	"context"
	"testing"

	"github.com/smbdirect/smbdirect/iwarp"
)

// BenchmarkRoundTrip64 is a 64-byte message and its echo.
func BenchmarkRoundTrip64(b *testing.B) {
	c, s := benchPair(b, nil)
	go func() {
		buf := make([]byte, 64)
		for {
			n, err := s.ReadMessage(buf)
			if err != nil {
				return
			}
			if s.WriteMessage(buf[:n]) != nil {
				return
			}
		}
	}()
	msg, buf := make([]byte, 64), make([]byte, 64)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.WriteMessage(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := c.ReadMessage(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStream1MiB sends 1 MiB messages one way, with the default
// 1364-byte MaxSendSize (769 fragments each) or negotiated large sizes.
func BenchmarkStream1MiB(b *testing.B) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"default", nil},
		{"large", func(c *Config) { c.MaxSendSize, c.MaxReceiveSize, c.MaxFragmentedSize = 65536, 65536, 2<<20 }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c, s := benchPair(b, tc.mod)
			done := make(chan struct{})
			go func() {
				defer close(done)
				buf := make([]byte, 1<<20)
				for {
					if _, err := s.ReadMessage(buf); err != nil {
						return
					}
				}
			}()
			msg := make([]byte, 1<<20)
			b.SetBytes(1 << 20)
			b.ReportAllocs()
			for b.Loop() {
				if err := c.WriteMessage(msg); err != nil {
					b.Fatal(err)
				}
			}
			c.Close()
			<-done
		})
	}
}

func benchPair(b testing.TB, mod func(*Config)) (*Conn, *Conn) {
	cc, sc := testConfig(), testConfig()
	if mod != nil {
		mod(cc)
		mod(sc)
	}
	return pairTB(b, cc, sc)
}

// BenchmarkRDMAReadFPDU: an RDMA Read of 1 MiB where the responder sends
// the Read Response as FPDUs of a given payload, as Linux siw does with
// MSS-sized ones (1448 B here: siw sizes FPDUs to the MSS unless built
// with GSO, and the VM's eth0 has MTU 1500) against our default of
// almost 64 KiB. The server-side RDMA channel fetches every WRITE's data
// this way, so this is what our side costs per MiB in that path.
func BenchmarkRDMAReadFPDU(b *testing.B) {
	for _, seg := range []int{1448, 0} {
		name := "mss1448"
		if seg == 0 {
			name = "default"
		}
		b.Run(name, func(b *testing.B) {
			cc := testConfig()
			sc := &Config{Provider: iwarp.New(iwarp.Config{FirstSendDelay: -1, MaxSegment: seg})}
			c, s := pairTB(b, cc, sc)
			src, err := s.Register(make([]byte, 1<<20), PeerRead)
			if err != nil {
				b.Fatal(err)
			}
			defer src.Close()
			dst := make([]byte, 1<<20)
			remote := []BufferDescriptor{src.Descriptor()}
			b.SetBytes(1 << 20)
			b.ResetTimer()
			for range b.N {
				if err := c.RDMARead(context.Background(), dst, remote); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
