package smbd

import (
	"testing"
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
