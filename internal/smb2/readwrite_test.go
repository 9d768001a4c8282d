package smb2

import (
	"bytes"
	"encoding/binary"
	"testing"
	"unsafe"
)

func readRequest(ci []byte) []byte {
	b := AppendHeader(nil, CommandRead, 7, 0x1122, 3, 16, 1)
	return AppendReadRequest(b, &ReadRequest{Length: 1 << 20, Offset: 4096, FileID: [16]byte{1, 2}, Channel: ChannelRDMAV1Invalidate, ChannelInfo: ci})
}

func writeRequest(data, ci []byte) []byte {
	b := AppendHeader(nil, CommandWrite, 8, 0x1122, 3, 1, 1)
	ch := uint32(ChannelNone)
	if ci != nil {
		ch = ChannelRDMAV1
	}
	return AppendWriteRequest(b, &WriteRequest{Offset: 10, Channel: ch, RemainingBytes: 5, ChannelInfo: ci, Data: data})
}

func readResponse(data []byte, remaining uint32) []byte {
	b := AppendHeader(nil, CommandRead, 7, 0x1122, 3, 1, 1)
	binary.LittleEndian.PutUint32(b[16:], FlagResponse)
	b = binary.LittleEndian.AppendUint16(b, 17)
	b = append(b, ReadResponseDataOffset, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
	b = binary.LittleEndian.AppendUint32(b, remaining)
	b = binary.LittleEndian.AppendUint32(b, 0)
	return append(b, data...)
}

func TestReadWriteRoundTrip(t *testing.T) {
	ci := bytes.Repeat([]byte{0xab}, 16)
	m := readRequest(ci)
	if len(m) != HeaderLen+48+16 {
		t.Fatalf("READ request is %d bytes", len(m))
	}
	h, err := ParseHeader(m)
	if err != nil || h.Command != CommandRead || h.MessageID != 7 {
		t.Fatal(h, err)
	}
	r, err := ParseReadRequest(m)
	if err != nil || r.Length != 1<<20 || r.Offset != 4096 || r.Channel != ChannelRDMAV1Invalidate || !bytes.Equal(r.ChannelInfo, ci) || r.FileID[1] != 2 {
		t.Fatalf("%+v %v", r, err)
	}
	// ksmbd's rule for RDMA WRITEs: Length 0, DataOffset 0, channel info
	// at or after the Buffer field (offset 112).
	w := writeRequest(nil, ci)
	if off := binary.LittleEndian.Uint16(w[HeaderLen+2:]); off != 0 {
		t.Fatalf("RDMA WRITE DataOffset %d", off)
	}
	if off := binary.LittleEndian.Uint16(w[HeaderLen+40:]); off != 112 {
		t.Fatalf("WriteChannelInfoOffset %d", off)
	}
	wr, err := ParseWriteRequest(w)
	if err != nil || wr.Length != 0 || wr.RemainingBytes != 5 || !bytes.Equal(wr.ChannelInfo, ci) || wr.Data != nil {
		t.Fatalf("%+v %v", wr, err)
	}
	w = writeRequest([]byte("hello"), nil)
	wr, err = ParseWriteRequest(w)
	if err != nil || string(wr.Data) != "hello" || wr.Length != 5 {
		t.Fatalf("%+v %v", wr, err)
	}
	rr, err := ParseReadResponse(readResponse([]byte("data"), 0))
	if err != nil || string(rr.Data) != "data" {
		t.Fatalf("%+v %v", rr, err)
	}
	body := readResponse(nil, 9)
	rr, err = ParseReadResponse(body)
	if err != nil || rr.DataLength != 0 || rr.DataRemaining != 9 {
		t.Fatalf("%+v %v", rr, err)
	}
	PutReadResponseData(body[HeaderLen:], 3)
	body = append(body, "abc"...)
	rr, err = ParseReadResponse(body)
	if err != nil || string(rr.Data) != "abc" || rr.DataRemaining != 0 {
		t.Fatalf("%+v %v", rr, err)
	}
}

func TestReadWriteRefuseOutOfBounds(t *testing.T) {
	m := readRequest(make([]byte, 16))
	binary.LittleEndian.PutUint16(m[HeaderLen+46:], 17)
	if _, err := ParseReadRequest(m); err == nil {
		t.Fatal("channel info past the end accepted")
	}
	w := writeRequest([]byte("hello"), nil)
	binary.LittleEndian.PutUint32(w[HeaderLen+4:], 6)
	if _, err := ParseWriteRequest(w); err == nil {
		t.Fatal("data past the end accepted")
	}
	w = writeRequest([]byte("hello"), nil)
	binary.LittleEndian.PutUint16(w[HeaderLen+2:], 10)
	if _, err := ParseWriteRequest(w); err == nil {
		t.Fatal("data overlapping the header accepted")
	}
	r := readResponse([]byte("data"), 0)
	binary.LittleEndian.PutUint32(r[HeaderLen+4:], 0xffffffff)
	if _, err := ParseReadResponse(r); err == nil {
		t.Fatal("huge DataLength accepted")
	}
}

// FuzzReadWrite runs the SMB2 header, READ and WRITE parsers on arbitrary
// bytes: no panic, and what they return lies within the message.
func FuzzReadWrite(f *testing.F) {
	f.Add(readRequest(make([]byte, 16)))
	f.Add(readRequest(nil))
	f.Add(writeRequest([]byte("hello"), nil))
	f.Add(writeRequest(nil, make([]byte, 32)))
	f.Add(readResponse([]byte("data"), 0))
	f.Add(readResponse(nil, 1<<20))
	within := func(t *testing.T, msg, part []byte) {
		if len(part) == 0 {
			return
		}
		base, p := uintptr(unsafe.Pointer(unsafe.SliceData(msg))), uintptr(unsafe.Pointer(unsafe.SliceData(part)))
		if p < base || p+uintptr(len(part)) > base+uintptr(len(msg)) {
			t.Fatalf("result is not within the message")
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseHeader(b)
		_ = Describe(b)
		if r, err := ParseReadRequest(b); err == nil {
			within(t, b, r.ChannelInfo)
		}
		if w, err := ParseWriteRequest(b); err == nil {
			within(t, b, w.ChannelInfo)
			within(t, b, w.Data)
			if int(w.Length) != len(w.Data) {
				t.Fatalf("Length %d, %d data bytes", w.Length, len(w.Data))
			}
		}
		if r, err := ParseReadResponse(b); err == nil {
			within(t, b, r.Data)
			if int(r.DataLength) != len(r.Data) {
				t.Fatalf("DataLength %d, %d data bytes", r.DataLength, len(r.Data))
			}
		}
	})
}
