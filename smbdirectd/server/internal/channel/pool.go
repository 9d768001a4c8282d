package channel

import (
	"math/bits"
	"sync"
)

// Pool hands out byte buffers by size class (powers of two from 4 KiB to
// 32 MiB), so a connection holds a large buffer only while a message is
// in hand and steady-state traffic allocates nothing.
type Pool struct{ classes [numClasses]sync.Pool }

const (
	minClassShift = 12
	numClasses    = 14 // up to 1<<25: a 16 MiB PDU and a MaxReadWriteSize of data
)

// Buffers is the pool the daemon's connections share.
var Buffers Pool

func class(n int) int {
	if n <= 1<<minClassShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minClassShift
}

// Get returns a buffer of at least n bytes (len = cap = its class size).
func (p *Pool) Get(n int) *[]byte {
	c := class(n)
	if c >= numClasses {
		b := make([]byte, n) // beyond every class: not pooled
		return &b
	}
	if b, ok := p.classes[c].Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 1<<(c+minClassShift))
	return &b
}

// Put returns a buffer from Get.
func (p *Pool) Put(b *[]byte) {
	if b == nil {
		return
	}
	c := class(cap(*b))
	if c >= numClasses || cap(*b) != 1<<(c+minClassShift) {
		return
	}
	*b = (*b)[:cap(*b)]
	p.classes[c].Put(b)
}
