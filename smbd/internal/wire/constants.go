package wire

import "time"

// ProtocolVersion is SMB Direct 1.0, the only version ([MS-SMBD] 1.7).
const ProtocolVersion uint16 = 0x0100

// FlagResponseRequested is SMB_DIRECT_RESPONSE_REQUESTED, the one Data
// Transfer flag: the peer must reply promptly; used for keepalives
// ([MS-SMBD] 2.2.3, 3.1.5.8). Other bits are not defined; receivers ignore
// them.
const FlagResponseRequested uint16 = 0x0001

// Message lengths.
const (
	NegotiateRequestLen  = 20 // 2.2.1
	NegotiateResponseLen = 32 // 2.2.2
	// DataTransferMinLen is the Data Transfer header without Padding: the
	// whole of a message without payload (3.1.5.8: at least 20 bytes).
	DataTransferMinLen = 20
	// DataTransferHeaderLen is the header with its 4 bytes of Padding, and
	// the DataOffset a sender SHOULD use for a payload (3.1.4, sending an
	// upper-layer message).
	DataTransferHeaderLen = 24
	BufferDescriptorV1Len = 16 // 2.2.3.1
)

// Lower bounds a receiver enforces on the peer's negotiate parameters
// ([MS-SMBD] 3.1.5.6, 3.1.5.7), and the smallest receive buffer an
// endpoint posts before negotiation (3.1.4.1, 3.1.7.2).
const (
	MinReceiveSize       = 128
	MinFragmentedSize    = 131072
	MinNegotiateRecvSize = 512
)

// Initial connection values of Windows, given by [MS-SMBD] Appendix B
// note <2> (section 3.1.4.1). Linux uses other values; see the comments.
const (
	DefaultReceiveCreditMax = 255
	DefaultSendCreditTarget = 255
	// DefaultMaxSendSize is Connection.MaxSendSize, sent as
	// PreferredSendSize (cifs.ko and ksmbd: 1364 too).
	DefaultMaxSendSize = 1364
	// DefaultMaxReceiveSize is Connection.MaxReceiveSize (cifs.ko and
	// ksmbd use 1364).
	DefaultMaxReceiveSize = 8192
	// DefaultMaxFragmentedRecvSize is Connection.MaxFragmentedRecvSize
	// (cifs.ko: 1364*255/2 = 0x2a756; ksmbd answers with
	// recv_credit_max*max_recv_size/2 too).
	DefaultMaxFragmentedRecvSize = 1048576
	// DefaultMaxReadWriteSize is the MaxReadWriteSize of the example in
	// [MS-SMBD] 4.1 (1 MiB; ksmbd's default is 8 MiB, and cifs.ko caps it
	// to its memory registration depth, 1 MiB on the testbed).
	DefaultMaxReadWriteSize = 1048576
	// DefaultKeepaliveInterval is Connection.KeepaliveInterval.
	DefaultKeepaliveInterval = 120 * time.Second
)

// Timers.
const (
	// IdleConnectionTimeout is the Idle Connection Timer of Windows
	// ([MS-SMBD] 3.1.2.2, note <1>): with no message from the peer for this
	// long, send one with FlagResponseRequested, and disconnect if no
	// answer comes.
	IdleConnectionTimeout = 120 * time.Second
	// NegotiateTimeoutActive is the Negotiation Timer of the connecting
	// side, started at connect ([MS-SMBD] 3.1.4.1; cifs.ko also waits 120 s).
	NegotiateTimeoutActive = 120 * time.Second
	// NegotiateTimeoutPassive is the Negotiation Timer of the listening
	// side, started when a connection arrives ([MS-SMBD] 3.1.7.2; ksmbd
	// waits 120 s instead).
	NegotiateTimeoutPassive = 5 * time.Second
)

// NTSTATUS values of the Negotiate Response Status field ([MS-ERREF]
// 2.3.1; [MS-SMBD] 3.1.5.3, 3.1.5.6).
const (
	StatusSuccess      uint32 = 0x00000000
	StatusNotSupported uint32 = 0xC00000BB
)

// Ports ([MS-SMBD] 1.9). SMB Direct uses the SMB2 port 445 on InfiniBand
// and RoCE, whose port space is separate from TCP's; on iWARP, which runs
// over TCP, it uses 5445 so that it can coexist with SMB2 over TCP.
const (
	PortInfiniBand = 445
	PortIWARP      = 5445
)

// SMB2 READ/WRITE Channel values ([MS-SMB2] 2.2.19, 2.2.21; 2.2.43 for
// the transform). With RDMAV1 and RDMAV1Invalidate the channel information
// is a list of Buffer Descriptor V1 (see ParseBufferDescriptors); with
// RDMAV1Invalidate the client asks the server to invalidate its
// registration with a Send with Invalidate when it answers (ksmbd sends
// the first descriptor's Token).
const (
	ChannelNone             uint32 = 0x00000000
	ChannelRDMAV1           uint32 = 0x00000001
	ChannelRDMAV1Invalidate uint32 = 0x00000002
	ChannelRDMATransform    uint32 = 0x00000003
)
