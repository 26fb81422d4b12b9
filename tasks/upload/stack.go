package upload

import (
	"math/bits"
	"unsafe"
)

// A stack grows a block at a time and never copies what it holds. Its
// blocks hold 32, 64, 128, 256 and 512 members, then 1,024 each: a small
// value costs little, and a large one no more than its members.
const (
	stackSmall = 5                        // blocks of 32<<b
	stackFirst = 32 * (1<<stackSmall - 1) // members of the small blocks (992)
	stackBlock = 32 << stackSmall         // members of each later block
)

// locate returns the block and offset of the i-th member.
func locate(i int) (int, int) {
	if i < stackFirst {
		b := bits.Len(uint(i/32+1)) - 1
		return b, i - 32*(1<<b-1)
	}
	return stackSmall + (i-stackFirst)/stackBlock, (i - stackFirst) % stackBlock
}

func blockSize(b int) int {
	if b < stackSmall {
		return 32 << b
	}
	return stackBlock
}

// stack holds the members of the objects or arrays being decoded, the
// innermost last. pop copies one container's members into a slice of its
// exact size.
type stack[T any] struct {
	blocks [][]T
	n      int
	d      *decoder // whose budget pushes are charged to
}

func (s *stack[T]) len() int { return s.n }

func (s *stack[T]) at(i int) *T {
	b, off := locate(i)
	return &s.blocks[b][off]
}

// push adds v, charging cost for the copy pop will make (and a new
// block's size when it needs one).
func (s *stack[T]) push(v T, cost int) error {
	b, off := locate(s.n)
	if b == len(s.blocks) {
		s.blocks = append(s.blocks, make([]T, blockSize(b)))
		var zero T
		cost += blockSize(b) * int(unsafe.Sizeof(zero))
	}
	s.blocks[b][off] = v
	s.n++
	return s.d.charge(cost)
}

// pop removes the members from base on and returns them. Their slots
// are not cleared: what they point to is in the slice returned, and the
// stack lives no longer than the decoding of one batch.
func (s *stack[T]) pop(base int) []T {
	out := make([]T, s.n-base)
	for i := base; i < s.n; {
		b, off := locate(i)
		blk := s.blocks[b][off:min(len(s.blocks[b]), off+s.n-i)]
		copy(out[i-base:], blk)
		i += len(blk)
	}
	s.n = base
	return out
}

// costIndex is what an object's key index costs per key, with the
// garbage of its growth.
const costIndex = 96

// dupField reports whether an object's fields, from base on the stack,
// hold key, and records it. Objects are small, and a scan beats a map up
// to a few dozen keys; beyond, index takes over (charged to the budget),
// so that a huge object costs linear time.
func (d *decoder) dupField(base int, index *map[string]struct{}, key string) (bool, error) {
	s := &d.fields
	n := s.n - base
	if n < 32 {
		for i := base; i < s.n; i++ {
			if s.at(i).Key == key {
				return true, nil
			}
		}
		return false, nil
	}
	if *index == nil {
		*index = make(map[string]struct{}, 2*n)
		for i := base; i < s.n; i++ {
			(*index)[s.at(i).Key] = struct{}{}
		}
		if err := d.charge(costIndex * n); err != nil {
			return false, err
		}
	}
	if _, ok := (*index)[key]; ok {
		return true, nil
	}
	(*index)[key] = struct{}{}
	return false, d.charge(costIndex)
}
