package smb2

import "encoding/binary"

// Dialect311 needs negotiate contexts (MS-SMB2 2.2.3.1).
const Dialect311 = 0x0311

// Negotiate context types (MS-SMB2 2.2.3.1).
const (
	ContextPreauthIntegrity = 0x0001
	ContextEncryption       = 0x0002
	ContextCompression      = 0x0003
	ContextNetname          = 0x0005
	ContextTransport        = 0x0006
	ContextRDMATransform    = 0x0007
	ContextSigning          = 0x0008
)

// Preauth integrity hash (2.2.3.1.1), ciphers (2.2.3.1.2) and signing
// algorithms (2.2.3.1.7).
const (
	HashSHA512 = 0x0001

	CipherAES128CCM = 0x0001
	CipherAES128GCM = 0x0002
	CipherAES256CCM = 0x0003
	CipherAES256GCM = 0x0004

	SigningHMACSHA256 = 0x0000
	SigningAESCMAC    = 0x0001
	SigningAESGMAC    = 0x0002
)

// negotiateContextHeader is ContextType, DataLength and Reserved.
const negotiateContextHeader = 8

// Offers of a 3.1.1 NEGOTIATE request, in order of preference, as Linux
// cifs.ko and Windows send them.
var (
	offerHashes  = []uint16{HashSHA512}
	offerCiphers = []uint16{CipherAES128GCM, CipherAES128CCM, CipherAES256GCM, CipherAES256CCM}
	offerSigning = []uint16{SigningAESGMAC, SigningAESCMAC, SigningHMACSHA256}
)

// pad8 appends zeros until b's length past start is a multiple of 8
// (negotiate contexts are 8-byte aligned from the SMB2 header).
func pad8(b []byte, start int) []byte {
	for (len(b)-start)%8 != 0 {
		b = append(b, 0)
	}
	return b
}

// AppendNegotiateContext appends one negotiate context of type typ whose
// data is the 2-byte count followed by list (the shape of the encryption
// and signing contexts). The caller aligns b.
func AppendNegotiateContext(b []byte, typ uint16, list []uint16) []byte {
	b = binary.LittleEndian.AppendUint16(b, typ)
	b = binary.LittleEndian.AppendUint16(b, uint16(2+2*len(list)))
	b = append(b, 0, 0, 0, 0)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(list)))
	for _, v := range list {
		b = binary.LittleEndian.AppendUint16(b, v)
	}
	return b
}

// AppendPreauthContext appends an SMB2_PREAUTH_INTEGRITY_CAPABILITIES
// context (2.2.3.1.1). The caller aligns b.
func AppendPreauthContext(b []byte, hashes []uint16, salt []byte) []byte {
	b = binary.LittleEndian.AppendUint16(b, ContextPreauthIntegrity)
	b = binary.LittleEndian.AppendUint16(b, uint16(4+2*len(hashes)+len(salt)))
	b = append(b, 0, 0, 0, 0)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(hashes)))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(salt)))
	for _, h := range hashes {
		b = binary.LittleEndian.AppendUint16(b, h)
	}
	return append(b, salt...)
}

// AppendNegotiateRequest311 appends an SMB2 NEGOTIATE request offering
// dialects, which should include Dialect311, with signing enabled and
// three negotiate contexts: preauth integrity (SHA-512 with salt),
// encryption (AES-128/256 GCM/CCM) and signing (AES-GMAC, AES-CMAC,
// HMAC-SHA256).
func AppendNegotiateRequest311(b []byte, messageID uint64, guid [16]byte, dialects []uint16, salt [32]byte) []byte {
	start := len(b)
	b = AppendNegotiateRequest(b, messageID, guid, dialects)
	b = pad8(b, start)
	body := start + HeaderLen
	binary.LittleEndian.PutUint32(b[body+28:], uint32(len(b)-start)) // NegotiateContextOffset
	binary.LittleEndian.PutUint16(b[body+32:], 3)                    // NegotiateContextCount
	b = AppendPreauthContext(b, offerHashes, salt[:])
	b = pad8(b, start)
	b = AppendNegotiateContext(b, ContextEncryption, offerCiphers)
	b = pad8(b, start)
	return AppendNegotiateContext(b, ContextSigning, offerSigning)
}

// NextNegotiateContext splits the context at the start of b (8-byte
// aligned) from the ones after it: its type, its data (a sub-slice of b)
// and the rest of b from the next 8-byte boundary.
func NextNegotiateContext(b []byte) (typ uint16, data, rest []byte, err error) {
	if len(b) < negotiateContextHeader {
		return 0, nil, nil, ErrShort
	}
	typ = binary.LittleEndian.Uint16(b)
	end := negotiateContextHeader + int(binary.LittleEndian.Uint16(b[2:]))
	if end > len(b) {
		return 0, nil, nil, ErrShort
	}
	data = b[negotiateContextHeader:end]
	next := min((end+7)&^7, len(b))
	return typ, data, b[next:], nil
}

// ParseContextList reads the count and first entry of an encryption or
// signing context's data, as a response carries it: the server's one
// choice.
func ParseContextList(data []byte) (first uint16, err error) {
	if len(data) < 2 {
		return 0, ErrShort
	}
	n := int(binary.LittleEndian.Uint16(data))
	if n < 1 {
		return 0, ErrMalformed
	}
	if len(data) < 2+2*n {
		return 0, ErrShort
	}
	return binary.LittleEndian.Uint16(data[2:]), nil
}

// ParsePreauthContext reads a preauth integrity context's data: the first
// hash algorithm and the salt (a sub-slice of data).
func ParsePreauthContext(data []byte) (hash uint16, salt []byte, err error) {
	if len(data) < 4 {
		return 0, nil, ErrShort
	}
	n, saltLen := int(binary.LittleEndian.Uint16(data)), int(binary.LittleEndian.Uint16(data[2:]))
	if n < 1 {
		return 0, nil, ErrMalformed
	}
	if len(data) < 4+2*n+saltLen {
		return 0, nil, ErrShort
	}
	return binary.LittleEndian.Uint16(data[4:]), data[4+2*n : 4+2*n+saltLen], nil
}

// parseResponseContexts fills r's context fields from the count contexts
// at offset off (from the SMB2 header) of the response msg.
func parseResponseContexts(r *NegotiateResponse, msg []byte, off, count int) error {
	if off < HeaderLen+64 || off > len(msg) {
		return ErrMalformed
	}
	b := msg[off:]
	for range count {
		typ, data, rest, err := NextNegotiateContext(b)
		if err != nil {
			return err
		}
		switch typ {
		case ContextPreauthIntegrity:
			r.PreauthHash, _, err = ParsePreauthContext(data)
		case ContextEncryption:
			r.Cipher, err = ParseContextList(data)
		case ContextSigning:
			r.Signing, err = ParseContextList(data)
		}
		if err != nil {
			return err
		}
		if typ < 32 {
			r.Contexts |= 1 << typ
		}
		b = rest
	}
	return nil
}

// HashName, CipherName and SigningName name the algorithms of the
// negotiate contexts.
func HashName(h uint16) string {
	if h == HashSHA512 {
		return "SHA-512"
	}
	return hexName(h)
}

func CipherName(c uint16) string {
	switch c {
	case 0:
		return "none"
	case CipherAES128CCM:
		return "AES-128-CCM"
	case CipherAES128GCM:
		return "AES-128-GCM"
	case CipherAES256CCM:
		return "AES-256-CCM"
	case CipherAES256GCM:
		return "AES-256-GCM"
	}
	return hexName(c)
}

func SigningName(s uint16) string {
	switch s {
	case SigningHMACSHA256:
		return "HMAC-SHA256"
	case SigningAESCMAC:
		return "AES-CMAC"
	case SigningAESGMAC:
		return "AES-GMAC"
	}
	return hexName(s)
}

func hexName(v uint16) string {
	const digits = "0123456789abcdef"
	return string([]byte{'0', 'x', digits[v>>12], digits[v>>8&15], digits[v>>4&15], digits[v&15]})
}
