package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/smb2"
	"github.com/smbdirect/smbdirect/iwarp"
	"github.com/smbdirect/smbdirect/smbd"
)

// fakeSMB2 accepts SMB Direct connections on 127.0.0.1 and answers each
// connection's first message with answer(request); a nil answer closes.
// The requests it got arrive on the returned channel.
func fakeSMB2(t *testing.T, answer func(req []byte) []byte) (string, <-chan []byte) {
	t.Helper()
	l, err := smbd.Listen(t.Context(), "127.0.0.1:0", &smbd.Config{Provider: iwarp.New(iwarp.Config{FirstSendDelay: -1})})
	if err != nil {
		t.Fatal(err)
	}
	reqs := make(chan []byte, 4)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.AcceptSMBD(context.Background())
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 1<<16)
			if n, err := c.ReadMessage(buf); err == nil {
				reqs <- bytes.Clone(buf[:n])
				if a := answer(buf[:n]); a != nil {
					c.WriteMessage(a)
					c.ReadMessage(buf) // until the probe hangs up
				}
			}
			c.Close()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
	})
	return l.Addr().String(), reqs
}

// negotiateResponse311 is a 3.1.1 NEGOTIATE response with the contexts a
// server picks from the probe's offer.
func negotiateResponse311() []byte {
	b := make([]byte, smb2.HeaderLen+64)
	copy(b, "\xfeSMB")
	binary.LittleEndian.PutUint16(b[4:], smb2.HeaderLen)
	binary.LittleEndian.PutUint32(b[16:], smb2.FlagResponse)
	body := b[smb2.HeaderLen:]
	binary.LittleEndian.PutUint16(body, 65)
	binary.LittleEndian.PutUint16(body[4:], smb2.Dialect311)
	binary.LittleEndian.PutUint16(body[6:], 3)
	binary.LittleEndian.PutUint32(body[32:], 8<<20)
	binary.LittleEndian.PutUint32(body[36:], 8<<20)
	binary.LittleEndian.PutUint32(body[60:], smb2.HeaderLen+64)
	b = smb2.AppendPreauthContext(b, []uint16{smb2.HashSHA512}, make([]byte, 32))
	b = append(b, 0, 0) // to the 8-byte boundary: 128+46 -> 176
	b = smb2.AppendNegotiateContext(b, smb2.ContextEncryption, []uint16{smb2.CipherAES128GCM})
	b = append(b, 0, 0, 0, 0) // 188 -> 192
	return smb2.AppendNegotiateContext(b, smb2.ContextSigning, []uint16{smb2.SigningAESCMAC})
}

func TestProbe311(t *testing.T) {
	addr, reqs := fakeSMB2(t, func([]byte) []byte { return negotiateResponse311() })
	var out, errb bytes.Buffer
	if err := run(t.Context(), []string{"probe", "--json", addr}, &out, &errb); err != nil {
		t.Fatalf("probe: %v\n%s", err, errb.String())
	}
	req := <-reqs
	if ds := smb2.Dialects(req); len(ds) != 5 || ds[4] != smb2.Dialect311 {
		t.Fatalf("offered dialects %x", ds)
	}
	var types []uint16
	rest := req[binary.LittleEndian.Uint32(req[smb2.HeaderLen+28:]):]
	for range binary.LittleEndian.Uint16(req[smb2.HeaderLen+32:]) {
		typ, _, next, err := smb2.NextNegotiateContext(rest)
		if err != nil {
			t.Fatal(err)
		}
		types, rest = append(types, typ), next
	}
	if len(types) != 3 || types[0] != smb2.ContextPreauthIntegrity || types[1] != smb2.ContextEncryption || types[2] != smb2.ContextSigning {
		t.Fatalf("contexts %v", types)
	}
	var r struct {
		Result  string `json:"result"`
		Dialect string `json:"dialect"`
		Error   string `json:"error"`
		SMB2    struct {
			Preauth string `json:"preauth_integrity"`
			Cipher  string `json:"cipher"`
			Signing string `json:"signing"`
		} `json:"smb2"`
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil || r.Result != "ok" || r.Dialect != "3.1.1" || r.Error != "" ||
		r.SMB2.Preauth != "SHA-512" || r.SMB2.Cipher != "AES-128-GCM" || r.SMB2.Signing != "AES-CMAC" {
		t.Fatalf("%s: %+v %v", out.String(), r, err)
	}
	out.Reset()
	if err := run(t.Context(), []string{"probe", addr}, &out, &errb); err != nil {
		t.Fatalf("probe: %v\n%s", err, errb.String())
	}
	for _, want := range []string{"SMB2 dialect 3.1.1, max read 8.0 MiB", "preauth integrity     SHA-512", "encryption            AES-128-GCM", "signing               AES-CMAC"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestProbePartial: SMB Direct negotiated, the SMB2 NEGOTIATE not
// answered: reported as partial in the text, in the JSON on stdout, and
// by the exit status.
func TestProbePartial(t *testing.T) {
	addr, _ := fakeSMB2(t, func([]byte) []byte { return nil })
	var out, errb bytes.Buffer
	err := run(t.Context(), []string{"probe", "--json", addr}, &out, &errb)
	var re reportedError
	if !errors.As(err, &re) || exitCode(err, &errb) != 1 || errb.Len() != 0 {
		t.Fatalf("probe: %v, stderr %q", err, errb.String())
	}
	var r map[string]any
	if err := json.Unmarshal(out.Bytes(), &r); err != nil || r["result"] != "partial" || r["smbd"] == nil || r["smb2"] != nil ||
		!strings.Contains(r["error"].(string), "SMB2 NEGOTIATE response") {
		t.Fatalf("%s: %v", out.String(), err)
	}
	out.Reset()
	err = run(t.Context(), []string{"probe", addr}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "partial: SMB Direct negotiated, SMB2 failed") ||
		!strings.Contains(out.String(), "SMB Direct with "+addr) || !strings.Contains(out.String(), "SMB2 NEGOTIATE failed") {
		t.Fatalf("probe: %v\n%s", err, out.String())
	}
}

// TestProbeFailed: nothing listens: JSON still on stdout, with the error.
func TestProbeFailed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var out, errb bytes.Buffer
	err = run(t.Context(), []string{"probe", "--json", addr}, &out, &errb)
	var r map[string]any
	if err == nil || json.Unmarshal(out.Bytes(), &r) != nil || r["result"] != "failed" || r["smbd"] != nil ||
		!strings.Contains(r["error"].(string), "connection refused") || r["server"] != addr {
		t.Fatalf("probe: %v\n%s", err, out.String())
	}
}

// TestProbeTimeout: --timeout bounds a probe of a peer that takes the TCP
// connection and never answers.
func TestProbeTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			held <- c
		}
		close(held)
	}()
	defer func() {
		l.Close()
		for c := range held {
			c.Close()
		}
	}()
	var out, errb bytes.Buffer
	t0 := time.Now()
	err = run(t.Context(), []string{"probe", "--timeout", "300ms", l.Addr().String()}, &out, &errb)
	if el := time.Since(t0); !errors.Is(err, context.DeadlineExceeded) || el < 300*time.Millisecond || el > 5*time.Second {
		t.Fatalf("probe: %v after %v", err, el)
	}
}
