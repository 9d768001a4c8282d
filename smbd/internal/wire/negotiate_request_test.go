package wire

import (
	"bytes"
	"testing"
)

// linuxRequest is the Negotiate Request cifs.ko sends
// (smbd_post_send_negotiate_req) with its defaults, as observed on the
// testbed: credits 255, send and receive size 1364, fragmented size
// 1364*255/2 = 0x2a756.
var linuxRequest = NegotiateRequest{
	MinVersion: 0x0100, MaxVersion: 0x0100, CreditsRequested: 255,
	PreferredSendSize: 1364, MaxReceiveSize: 1364, MaxFragmentedSize: 0x2a756,
}

const linuxRequestHex = `
	0001 0001 // min, max version 0x0100
	0000 ff00 // reserved, credits requested 255
	54050000  // preferred send size 1364
	54050000  // max receive size 1364
	56a70200  // max fragmented size 0x2a756`

func TestNegotiateRequestBytes(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    NegotiateRequest
		hex  string
	}{
		{"cifs.ko", linuxRequest, linuxRequestHex},
		// [MS-SMBD] 4.1, step 1.
		{"MS-SMBD 4.1", NegotiateRequest{
			MinVersion: 0x0100, MaxVersion: 0x0100, CreditsRequested: 10,
			PreferredSendSize: 1024, MaxReceiveSize: 1024, MaxFragmentedSize: 0x20000,
		}, "0001 0001 0000 0a00 00040000 00040000 00000200"},
	} {
		want := hx(t, tc.hex)
		got := AppendNegotiateRequest([]byte{0xaa}, &tc.r)
		if !bytes.Equal(got[1:], want) || got[0] != 0xaa {
			t.Errorf("%s: Append = % x, want aa % x", tc.name, got, want)
		}
		if len(want) != NegotiateRequestLen {
			t.Fatalf("%s: test vector is %d bytes", tc.name, len(want))
		}
		r, err := ParseNegotiateRequest(want)
		if err != nil || r != tc.r {
			t.Errorf("%s: Parse = %+v, %v", tc.name, r, err)
		}
		if err := r.Validate(); err != nil {
			t.Errorf("%s: Validate: %v", tc.name, err)
		}
	}
}

func TestNegotiateRequestLength(t *testing.T) {
	b := AppendNegotiateRequest(nil, &linuxRequest)
	for n := range NegotiateRequestLen {
		if _, err := ParseNegotiateRequest(b[:n]); err != ErrShort {
			t.Errorf("%d bytes: err = %v, want ErrShort", n, err)
		}
	}
	// Trailing bytes are ignored (3.1.5.6 "at least 20 bytes"; ksmbd).
	r, err := ParseNegotiateRequest(append(b, 1, 2, 3, 4))
	if err != nil || r != linuxRequest {
		t.Errorf("with trailing bytes: %+v, %v", r, err)
	}
	// Reserved is ignored on receipt.
	b[4], b[5] = 0xff, 0xff
	if r, err := ParseNegotiateRequest(b); err != nil || r != linuxRequest {
		t.Errorf("with reserved set: %+v, %v", r, err)
	}
}

func TestNegotiateRequestValidate(t *testing.T) {
	ok := linuxRequest
	for _, tc := range []struct {
		name string
		edit func(*NegotiateRequest)
		rule Rule
	}{
		{"min above 0x0100", func(r *NegotiateRequest) { r.MinVersion = 0x0200; r.MaxVersion = 0x0200 }, RuleVersion},
		{"max below 0x0100", func(r *NegotiateRequest) { r.MinVersion = 0x0000; r.MaxVersion = 0x00ff }, RuleVersion},
		{"min above max", func(r *NegotiateRequest) { r.MinVersion = 0x0101; r.MaxVersion = 0x0100 }, RuleVersion},
		{"no credits", func(r *NegotiateRequest) { r.CreditsRequested = 0 }, RuleCreditsRequested},
		{"receive size 127", func(r *NegotiateRequest) { r.MaxReceiveSize = 127 }, RuleMaxReceiveSize},
		{"fragmented size 131071", func(r *NegotiateRequest) { r.MaxFragmentedSize = 131071 }, RuleMaxFragmentedSize},
		// Version comes first even when everything else is wrong too.
		{"all wrong", func(r *NegotiateRequest) { *r = NegotiateRequest{MinVersion: 0x0200, MaxVersion: 0x0300} }, RuleVersion},
	} {
		r := ok
		tc.edit(&r)
		wantRule(t, r.Validate(), tc.rule)
	}
	for _, tc := range []struct {
		name string
		edit func(*NegotiateRequest)
	}{
		{"range around 0x0100", func(r *NegotiateRequest) { r.MinVersion = 0x0001; r.MaxVersion = 0x0300 }},
		{"bounds inclusive", func(r *NegotiateRequest) {
			r.CreditsRequested = 1
			r.MaxReceiveSize = MinReceiveSize
			r.MaxFragmentedSize = MinFragmentedSize
		}},
	} {
		r := ok
		tc.edit(&r)
		if err := r.Validate(); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func FuzzNegotiateRequest(f *testing.F) {
	f.Add(AppendNegotiateRequest(nil, &linuxRequest))
	f.Add(AppendNegotiateRequest(nil, &NegotiateRequest{MinVersion: 0x200, MaxVersion: 0x100}))
	f.Add([]byte{0, 1, 0, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseNegotiateRequest(data)
		if err != nil {
			if err != ErrShort || len(data) >= NegotiateRequestLen {
				t.Fatalf("%d bytes: %v", len(data), err)
			}
			return
		}
		enc := AppendNegotiateRequest(nil, &r)
		want := bytes.Clone(data[:NegotiateRequestLen])
		want[4], want[5] = 0, 0 // Reserved
		if !bytes.Equal(enc, want) {
			t.Fatalf("re-encoded % x, want % x", enc, want)
		}
		r2, err := ParseNegotiateRequest(enc)
		if err != nil || r2 != r {
			t.Fatalf("round trip: %+v, %v; want %+v", r2, err, r)
		}
		if err := r.Validate(); err != nil {
			checkErr(t, err)
		}
	})
}
