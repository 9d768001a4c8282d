package wire

import "encoding/binary"

// ReadRequest is the RDMAP header of an RDMA Read Request.
type ReadRequest struct {
	MSN        uint32
	SinkSTag   uint32
	SinkTO     uint64
	Size       uint32
	SourceSTag uint32
	SourceTO   uint64
}

// AppendReadRequest appends a whole Read Request header (one segment, queue
// 1, MO 0, Last set).
func AppendReadRequest(b []byte, r *ReadRequest) []byte {
	b = AppendUntagged(b, OpReadRequest, true, 0, QNReadRequest, r.MSN, 0)
	b = binary.BigEndian.AppendUint32(b, r.SinkSTag)
	b = binary.BigEndian.AppendUint64(b, r.SinkTO)
	b = binary.BigEndian.AppendUint32(b, r.Size)
	b = binary.BigEndian.AppendUint32(b, r.SourceSTag)
	return binary.BigEndian.AppendUint64(b, r.SourceTO)
}
