package wire

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// hx decodes hex written with spaces between bytes or groups and "//"
// comments to the end of a line.
func hx(t testing.TB, s string) []byte {
	t.Helper()
	var digits strings.Builder
	for line := range strings.Lines(s) {
		line, _, _ = strings.Cut(line, "//")
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wantRule fails t unless err is a *RuleError for rule that wraps
// ErrMalformed.
func wantRule(t testing.TB, err error, rule Rule) {
	t.Helper()
	var re *RuleError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v, want a *RuleError %v", err, rule)
	}
	if re.Rule != rule {
		t.Fatalf("rule = %v (%v), want %v", re.Rule, err, rule)
	}
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("%v does not wrap ErrMalformed", err)
	}
	if err.Error() == "" {
		t.Fatal("empty message")
	}
}

// checkErr is the fuzz targets' check of a parser's error: ErrShort or a
// *RuleError wrapping ErrMalformed.
func checkErr(t *testing.T, err error) {
	t.Helper()
	if err == ErrShort {
		return
	}
	var re *RuleError
	if !errors.As(err, &re) || !errors.Is(err, ErrMalformed) || re.Rule == 0 || strings.HasPrefix(re.Rule.String(), "rule ") {
		t.Fatalf("unexpected error %v", err)
	}
}

func TestRuleString(t *testing.T) {
	for r := RuleVersion; r <= RuleDescriptorCount; r++ {
		if strings.HasPrefix(r.String(), "rule ") {
			t.Errorf("rule %d has no name", r)
		}
	}
	if got := Rule(200).String(); got != "rule 200" {
		t.Errorf("Rule(200) = %q", got)
	}
	if got := (&RuleError{Rule: RuleStatus, Got: uint64(StatusNotSupported)}).Error(); !strings.Contains(got, "0xc00000bb") {
		t.Errorf("status error %q lacks the NTSTATUS in hex", got)
	}
}

// TestNoAllocs checks that every encoder and parser runs without
// allocating (the benchmarks in data_transfer_test.go show it too).
func TestNoAllocs(t *testing.T) {
	buf := make([]byte, 0, 256)
	req := NegotiateRequest{MinVersion: 0x100, MaxVersion: 0x100, CreditsRequested: 255, PreferredSendSize: 1364, MaxReceiveSize: 1364, MaxFragmentedSize: 0x2a756}
	resp := NegotiateResponse{MinVersion: 0x100, MaxVersion: 0x100, NegotiatedVersion: 0x100, CreditsRequested: 255, CreditsGranted: 255, MaxReadWriteSize: 1 << 20, PreferredSendSize: 1364, MaxReceiveSize: 1364, MaxFragmentedSize: 0x2a756}
	dt := DataTransfer{CreditsRequested: 255, CreditsGranted: 10, DataLength: 100}
	ds := []BufferDescriptorV1{{Offset: 1, Token: 2, Length: 3}, {Offset: 4, Token: 5, Length: 6}}
	msg := AppendDataTransfer(nil, &dt)
	msg = append(msg, make([]byte, 100)...)
	descs := AppendBufferDescriptors(nil, ds)
	reqb := AppendNegotiateRequest(nil, &req)
	respb := AppendNegotiateResponse(nil, &resp)
	var sink uint64
	for name, f := range map[string]func(){
		"AppendNegotiateRequest":  func() { buf = AppendNegotiateRequest(buf[:0], &req) },
		"AppendNegotiateResponse": func() { buf = AppendNegotiateResponse(buf[:0], &resp) },
		"AppendDataTransfer":      func() { buf = AppendDataTransfer(buf[:0], &dt) },
		"AppendBufferDescriptors": func() { buf = AppendBufferDescriptors(buf[:0], ds) },
		"ParseNegotiateRequest": func() {
			r, err := ParseNegotiateRequest(reqb)
			if err != nil || r.Validate() != nil {
				panic(err)
			}
		},
		"ParseNegotiateResponse": func() {
			r, err := ParseNegotiateResponse(respb)
			if err != nil || r.Validate(1364) != nil {
				panic(err)
			}
		},
		"ParseDataTransfer": func() {
			h, p, err := ParseDataTransfer(msg)
			if err != nil || h.CheckFragment(1<<20) != nil {
				panic(err)
			}
			sink += uint64(len(p))
		},
		"ParseBufferDescriptors": func() {
			l, err := ParseBufferDescriptors(descs, 8)
			if err != nil {
				panic(err)
			}
			for i := range l.Len() {
				sink += l.At(i).Offset
			}
			sink += l.TotalLength()
		},
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocs per run", name, n)
		}
	}
	_ = sink
}
