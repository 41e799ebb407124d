// Package nvs writes ESP-IDF NVS partition images: the key-value store
// an app reads with nvs_open() and nvs_get_str(), as ESP-IDF's "NVS
// Partition Generator Utility" documents and writes it (format version
// 2, unencrypted): 4 KB pages, each a 32-byte header (state, sequence
// number, version, CRC-32), a 32-byte bitmap of its 126 entries' states
// and the entries of 32 bytes (namespace index, type, span, chunk index,
// CRC-32, a 16-byte key, 8 bytes of data; a string's bytes follow its
// entry). The last page is left erased, as the library needs one free.
// otabox writes a board's own values (serial number, ...) with it.
package nvs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

const (
	pageSize   = 4096
	entrySize  = 32
	maxEntries = 126
	firstEntry = 64
	maxString  = 4000 // version 2's limit for a string's bytes, NUL included
	maxKey     = 15   // a key's bytes; the 16th is its NUL

	stateActive = 0xFFFFFFFE
	version2    = 0xFE
	chunkAny    = 0xFF

	typeU8  = 0x01
	typeU32 = 0x04
	typeSZ  = 0x21
)

// Value is one key's value: a string (Str) or an unsigned 32-bit number.
type Value struct {
	Key string
	Str string
	U32 uint32
	// Number says the value is U32, not Str.
	Number bool
}

// Build is an NVS partition of size bytes (a multiple of 4096, at least
// two pages) holding values in namespace ns, in the order given.
func Build(size int, ns string, values []Value) ([]byte, error) {
	if size%pageSize != 0 || size < 2*pageSize {
		return nil, fmt.Errorf("nvs: size %d is not a multiple of 4096 of at least two pages", size)
	}
	if err := checkKey(ns); err != nil {
		return nil, fmt.Errorf("nvs: namespace %w", err)
	}
	b := &builder{size: size}
	b.page()
	if err := b.put(0, typeU8, ns, nsIndex(1), nil); err != nil {
		return nil, err
	}
	for _, v := range values {
		if err := checkKey(v.Key); err != nil {
			return nil, fmt.Errorf("nvs: key %w", err)
		}
		var err error
		if v.Number {
			d := make([]byte, 8)
			for i := range d {
				d[i] = 0xff
			}
			binary.LittleEndian.PutUint32(d, v.U32)
			err = b.put(1, typeU32, v.Key, d, nil)
		} else {
			s := append([]byte(v.Str), 0)
			if len(s) > maxString {
				return nil, fmt.Errorf("nvs: %s: %d bytes, more than a string may hold (%d)", v.Key, len(s), maxString-1)
			}
			d := make([]byte, 8)
			binary.LittleEndian.PutUint16(d, uint16(len(s)))
			d[2], d[3] = 0xff, 0xff
			binary.LittleEndian.PutUint32(d[4:], crc(s))
			err = b.put(1, typeSZ, v.Key, d, s)
		}
		if err != nil {
			return nil, err
		}
	}
	// Every page left is an empty active one, the last erased.
	for len(b.out) < size-pageSize {
		b.page()
	}
	out := make([]byte, size)
	for i := range out {
		out[i] = 0xff
	}
	copy(out, b.out)
	return out, nil
}

func nsIndex(i byte) []byte { return []byte{i, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff} }

func checkKey(k string) error {
	if k == "" || len(k) > maxKey {
		return fmt.Errorf("%q: 1 to %d bytes", k, maxKey)
	}
	return nil
}

// crc is the CRC-32 the NVS library checks: IEEE, as zlib's crc32 seeded
// with 0xFFFFFFFF computes it.
func crc(b []byte) uint32 { return crc32.Update(0xFFFFFFFF, crc32.IEEETable, b) }

type builder struct {
	size    int
	out     []byte
	page0   int // offset of the page being filled
	entries int // entries used in it
	seq     uint32
}

// page starts a new active page.
func (b *builder) page() {
	p := make([]byte, pageSize)
	for i := range p {
		p[i] = 0xff
	}
	binary.LittleEndian.PutUint32(p[0:], stateActive)
	binary.LittleEndian.PutUint32(p[4:], b.seq)
	p[8] = version2
	binary.LittleEndian.PutUint32(p[28:], crc(p[4:28]))
	b.seq++
	b.page0, b.entries = len(b.out), 0
	b.out = append(b.out, p...)
}

var errFull = errors.New("nvs: the values do not fit the partition")

// put writes one entry (and tail, a string's bytes, in the entries after
// it) on the current page, or on a new one when it does not fit.
func (b *builder) put(ns, typ byte, key string, data, tail []byte) error {
	span := 1 + (len(tail)+entrySize-1)/entrySize
	if b.entries+span > maxEntries || (tail != nil && b.entries+span >= maxEntries) {
		if len(b.out)+pageSize > b.size-pageSize {
			return errFull
		}
		b.page()
	}
	e := make([]byte, entrySize)
	e[0], e[1], e[2], e[3] = ns, typ, byte(span), chunkAny
	copy(e[8:24], key) // the rest of the key field stays 0
	copy(e[24:], data)
	sum := crc(append(append([]byte(nil), e[0:4]...), e[8:32]...))
	binary.LittleEndian.PutUint32(e[4:], sum)
	p := b.out[b.page0 : b.page0+pageSize]
	at := firstEntry + b.entries*entrySize
	copy(p[at:], e)
	copy(p[at+entrySize:], tail) // what the string leaves of its last entry stays erased
	for i := 0; i < span; i++ {
		// Two bits an entry, 0b10 once written.
		bit := (b.entries + i) * 2
		p[32+bit/8] &^= 1 << (bit % 8)
	}
	b.entries += span
	return nil
}
