package wire

import (
	"bytes"
	"testing"
)

// specResponse is the Negotiate Response of [MS-SMBD] 4.1, step 2.
var specResponse = NegotiateResponse{
	MinVersion: 0x0100, MaxVersion: 0x0100, NegotiatedVersion: 0x0100,
	CreditsRequested: 10, CreditsGranted: 10, Status: StatusSuccess,
	MaxReadWriteSize: 1 << 20, PreferredSendSize: 1024, MaxReceiveSize: 1024,
	MaxFragmentedSize: 0x20000,
}

func TestNegotiateResponseBytes(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    NegotiateResponse
		hex  string
	}{
		{"MS-SMBD 4.1", specResponse, `
			0001 0001 // min, max version
			0001 0000 // negotiated version, reserved
			0a00 0a00 // credits requested, granted
			00000000  // status
			00001000  // max read/write size 1 MiB
			00040000  // preferred send size 1024
			00040000  // max receive size 1024
			00000200  // max fragmented size 128 KiB`},
		// ksmbd's answer to a request without 0x0100 in its range
		// (smb_direct_send_negotiate_response with failed set), the shape
		// [MS-SMBD] 3.1.5.3 prescribes.
		{"ksmbd failure", NegotiateResponse{
			MinVersion: 0x0100, MaxVersion: 0x0100, Status: StatusNotSupported,
		}, `
			0001 0001 0000 0000 0000 0000
			bb0000c0  // STATUS_NOT_SUPPORTED
			00000000 00000000 00000000 00000000`},
	} {
		want := hx(t, tc.hex)
		if len(want) != NegotiateResponseLen {
			t.Fatalf("%s: test vector is %d bytes", tc.name, len(want))
		}
		got := AppendNegotiateResponse([]byte{0xaa}, &tc.r)
		if !bytes.Equal(got[1:], want) || got[0] != 0xaa {
			t.Errorf("%s: Append = % x, want aa % x", tc.name, got, want)
		}
		r, err := ParseNegotiateResponse(want)
		if err != nil || r != tc.r {
			t.Errorf("%s: Parse = %+v, %v", tc.name, r, err)
		}
	}
}

func TestNegotiateResponseLength(t *testing.T) {
	b := AppendNegotiateResponse(nil, &specResponse)
	for n := range NegotiateResponseLen {
		if _, err := ParseNegotiateResponse(b[:n]); err != ErrShort {
			t.Errorf("%d bytes: err = %v, want ErrShort", n, err)
		}
	}
	// Trailing bytes are ignored (3.1.5.7 "at least 32 bytes"; cifs.ko).
	if r, err := ParseNegotiateResponse(append(b, 9, 9, 9, 9, 9, 9, 9, 9)); err != nil || r != specResponse {
		t.Errorf("with trailing bytes: %+v, %v", r, err)
	}
	b[6], b[7] = 0xff, 0xff // Reserved is ignored
	if r, err := ParseNegotiateResponse(b); err != nil || r != specResponse {
		t.Errorf("with reserved set: %+v, %v", r, err)
	}
}

func TestNegotiateResponseValidate(t *testing.T) {
	const ourMaxReceive = 1024
	if err := specResponse.Validate(ourMaxReceive); err != nil {
		t.Fatalf("spec example: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*NegotiateResponse)
		rule Rule
	}{
		{"failure response", func(r *NegotiateResponse) {
			*r = NegotiateResponse{MinVersion: 0x0100, MaxVersion: 0x0100, Status: StatusNotSupported}
		}, RuleStatus},
		{"version 0x0200", func(r *NegotiateResponse) { r.NegotiatedVersion = 0x0200 }, RuleNegotiatedVersion},
		{"receive size 127", func(r *NegotiateResponse) { r.MaxReceiveSize = 127 }, RuleMaxReceiveSize},
		{"fragmented size 131071", func(r *NegotiateResponse) { r.MaxFragmentedSize = 131071 }, RuleMaxFragmentedSize},
		{"no credits granted", func(r *NegotiateResponse) { r.CreditsGranted = 0 }, RuleCreditsGranted},
		{"no credits requested", func(r *NegotiateResponse) { r.CreditsRequested = 0 }, RuleCreditsRequested},
		{"sends more than we receive", func(r *NegotiateResponse) { r.PreferredSendSize = ourMaxReceive + 1 }, RulePreferredSendSize},
	} {
		r := specResponse
		tc.edit(&r)
		wantRule(t, r.Validate(ourMaxReceive), tc.rule)
	}
	r := specResponse
	r.MaxReceiveSize, r.MaxFragmentedSize, r.CreditsGranted, r.CreditsRequested = MinReceiveSize, MinFragmentedSize, 1, 1
	r.PreferredSendSize = ourMaxReceive
	if err := r.Validate(ourMaxReceive); err != nil {
		t.Errorf("bounds are inclusive: %v", err)
	}
}

func FuzzNegotiateResponse(f *testing.F) {
	f.Add(AppendNegotiateResponse(nil, &specResponse), uint32(1024))
	f.Add(AppendNegotiateResponse(nil, &NegotiateResponse{MinVersion: 0x100, MaxVersion: 0x100, Status: StatusNotSupported}), uint32(1364))
	f.Add(make([]byte, 31), uint32(0))
	f.Fuzz(func(t *testing.T, data []byte, maxReceive uint32) {
		r, err := ParseNegotiateResponse(data)
		if err != nil {
			if err != ErrShort || len(data) >= NegotiateResponseLen {
				t.Fatalf("%d bytes: %v", len(data), err)
			}
			return
		}
		enc := AppendNegotiateResponse(nil, &r)
		want := bytes.Clone(data[:NegotiateResponseLen])
		want[6], want[7] = 0, 0 // Reserved
		if !bytes.Equal(enc, want) {
			t.Fatalf("re-encoded % x, want % x", enc, want)
		}
		r2, err := ParseNegotiateResponse(enc)
		if err != nil || r2 != r {
			t.Fatalf("round trip: %+v, %v; want %+v", r2, err, r)
		}
		if err := r.Validate(maxReceive); err != nil {
			checkErr(t, err)
		} else if r.Status != 0 || r.NegotiatedVersion != ProtocolVersion || r.CreditsGranted == 0 || r.PreferredSendSize > maxReceive {
			t.Fatalf("Validate passed %+v", r)
		}
	})
}
