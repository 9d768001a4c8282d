//go:build !unix

package iwarp

import "net"

// tcpMSS cannot read the MSS here: the caller assumes Ethernet's.
func tcpMSS(net.Conn) int { return 0 }
