package iwarp

import (
	"net"

	"github.com/smbdirect/smbdirect/iwarp/internal/wire"
)

// How large our FPDUs are. RFC 5041 has DDP cut each message into
// segments no larger than the MULPDU its lower layer reports, and RFC
// 5044 derives MPA's MULPDU from the TCP connection's EMSS, so that an
// FPDU fits in one TCP segment: that is what lets an iWARP adapter place
// a segment's data without reassembling the stream first. Linux siw (6.12)
// does the same: it sizes every FPDU to the MSS, unless both ends set the
// experimental GSO bit in their MPA frames (its try_gso, compiled out
// since). Between our own ends, where both sides read whole streams,
// larger FPDUs are cheaper; so we use them only when both ends announce
// it (see mpaLargeFPDU), and size FPDUs to the MSS otherwise.

// fpduFallbackEMSS is the EMSS assumed where the socket cannot tell its
// MSS: Ethernet's 1500-byte MTU less IPv4, TCP and timestamp headers.
const fpduFallbackEMSS = 1448

// minFPDU is the smallest FPDU a configured size may ask for: a Read
// Request with its header must fit.
const minFPDU = 64

// mulpduOf returns the largest ULPDU (DDP/RDMAP header and payload) that
// an FPDU of at most fpdu bytes carries: it leaves room for the MPA length
// field and the CRC field, and keeps the FPDU a multiple of 4 so that a
// full segment needs no pad (RFC 5044's MULPDU = EMSS - (6 + EMSS mod 4)
// without markers).
func mulpduOf(fpdu int) int {
	return min(fpdu-wire.MPALenSize-wire.CRCSize-fpdu%4, wire.MaxULPDU)
}

// fpduLimits sets the endpoint's payload limits per FPDU, tagged (RDMA
// Write, Read Response) and untagged (Send). large: both ends announced
// large FPDUs.
func (e *endpoint) fpduLimits(conn net.Conn, large bool) {
	var mulpdu int
	switch {
	case e.pcfg.MaxFPDU > 0:
		mulpdu = mulpduOf(max(e.pcfg.MaxFPDU, minFPDU))
	case large:
		mulpdu = wire.MaxULPDU
	default:
		emss := tcpMSS(conn)
		if emss <= 0 {
			emss = fpduFallbackEMSS
		}
		mulpdu = mulpduOf(max(emss, minFPDU))
	}
	e.segT = min(mulpdu-wire.TaggedLen, e.pcfg.MaxSegment)
	e.segU = min(mulpdu-wire.UntaggedLen, e.pcfg.MaxSegment)
}

// mpaLargeFPDU is the opt-in to FPDUs beyond the MSS. The initiator sets
// mpaLarge in its MPA Request: the bit Linux siw sets for the same purpose
// (MPA_RR_FLAG_GSO_EXP). A responder of ours answers with mpaLarge and
// mpaLargeAck. The second bit is there because siw (6.12) builds its MPA
// Reply from the Request and so echoes every bit it does not know,
// mpaLarge included: only an answer carrying mpaLargeAck comes from a
// responder that reads large FPDUs and chose to receive them. A
// responder that sees mpaLarge sends large FPDUs too, as siw with
// try_gso does when both bits meet. RFC 5044 reserves these bits (zero on
// send, ignored on receive); Config.NoLargeFPDU keeps them zero.
const (
	mpaLarge    = 0x0800
	mpaLargeAck = 0x0400
)
