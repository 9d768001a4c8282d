package wire

import (
	"bytes"
	"testing"
)

var twoDescs = []BufferDescriptorV1{
	{Offset: 0x0000_7f12_3456_8000, Token: 0x1234_5601, Length: 0x10_0000},
	{Offset: 0x1000, Token: 0xdead_be02, Length: 512},
}

const twoDescsHex = `
	00805634127f0000 // offset
	01563412         // token
	00001000         // length 1 MiB
	0010000000000000 // offset 0x1000
	02bead de        // token
	00020000         // length 512`

func TestBufferDescriptorsBytes(t *testing.T) {
	want := hx(t, twoDescsHex)
	got := AppendBufferDescriptors([]byte{0xaa}, twoDescs)
	if !bytes.Equal(got[1:], want) || got[0] != 0xaa {
		t.Fatalf("Append = % x, want aa % x", got, want)
	}
	if got := AppendBufferDescriptors(nil, nil); len(got) != 0 {
		t.Errorf("no descriptors: % x", got)
	}
	l, err := ParseBufferDescriptors(want, 2)
	if err != nil {
		t.Fatal(err)
	}
	if l.Len() != 2 || l.At(0) != twoDescs[0] || l.At(1) != twoDescs[1] {
		t.Errorf("parsed %d: %+v %+v", l.Len(), l.At(0), l.At(1))
	}
	if got := l.TotalLength(); got != 0x10_0000+512 {
		t.Errorf("TotalLength = %d", got)
	}
}

func TestBufferDescriptorsRules(t *testing.T) {
	b := hx(t, twoDescsHex)
	for _, tc := range []struct {
		name string
		b    []byte
		max  int
		rule Rule
	}{
		{"empty", nil, 4, RuleDescriptorCount},
		{"15 bytes", b[:15], 4, RuleDescriptorLength},
		{"17 bytes", b[:17], 4, RuleDescriptorLength},
		{"31 bytes", b[:31], 4, RuleDescriptorLength},
		{"two, max one", b, 1, RuleDescriptorCount},
		{"max zero", b[:16], 0, RuleDescriptorCount},
		{"max negative", b[:16], -1, RuleDescriptorCount},
	} {
		l, err := ParseBufferDescriptors(tc.b, tc.max)
		wantRule(t, err, tc.rule)
		if l.Len() != 0 {
			t.Errorf("%s: %d entries with an error", tc.name, l.Len())
		}
	}
	if l, err := ParseBufferDescriptors(b[:16], 1); err != nil || l.Len() != 1 || l.At(0) != twoDescs[0] {
		t.Errorf("one of one: %v", err)
	}
}

func FuzzBufferDescriptors(f *testing.F) {
	f.Add(AppendBufferDescriptors(nil, twoDescs), 2)
	f.Add(AppendBufferDescriptors(nil, twoDescs[:1]), 16)
	f.Add(make([]byte, 24), 4)
	f.Add([]byte(nil), 1)
	f.Fuzz(func(t *testing.T, b []byte, maxEntries int) {
		l, err := ParseBufferDescriptors(b, maxEntries)
		if err != nil {
			checkErr(t, err)
			if len(b)%16 == 0 && len(b) > 0 && len(b)/16 <= maxEntries {
				t.Fatalf("refused %d bytes with max %d: %v", len(b), maxEntries, err)
			}
			return
		}
		n := l.Len()
		if n < 1 || n > maxEntries || n*BufferDescriptorV1Len != len(b) {
			t.Fatalf("accepted %d entries from %d bytes with max %d", n, len(b), maxEntries)
		}
		ds := make([]BufferDescriptorV1, n)
		var total uint64
		for i := range n {
			ds[i] = l.At(i)
			total += uint64(ds[i].Length)
		}
		if enc := AppendBufferDescriptors(nil, ds); !bytes.Equal(enc, b) {
			t.Fatalf("re-encoded % x, want % x", enc, b)
		}
		if l.TotalLength() != total {
			t.Fatalf("TotalLength %d, want %d", l.TotalLength(), total)
		}
	})
}
