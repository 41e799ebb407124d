// Package fsimage recognises the filesystem images ESP devices flash with
// ESPhttpUpdate.updateFS() / httpUpdate.updateSpiffs(): a LittleFS image by
// its superblock, a SPIFFS image (which has no header to tell it by) by
// its name. Pure functions over bytes; it imports nothing of the project.
package fsimage

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"path"
	"strings"
)

// Kind is a filesystem's format.
type Kind string

const (
	LittleFS Kind = "littlefs"
	SPIFFS   Kind = "spiffs"
)

// Image is what an image says about the filesystem area it fills.
type Image struct {
	Kind Kind `json:"kind"`
	// Version, BlockSize and BlockCount are LittleFS's superblock fields
	// (zero for SPIFFS).
	Version    uint32 `json:"version,omitempty"`
	BlockSize  uint32 `json:"block_size,omitempty"`
	BlockCount uint32 `json:"block_count,omitempty"`
}

// Describe is one line for inspect and the logs.
func (im *Image) Describe() string {
	if im.Kind == LittleFS {
		return fmt.Sprintf("LittleFS %d.%d, %d blocks of %d bytes", im.Version>>16, im.Version&0xffff, im.BlockCount, im.BlockSize)
	}
	return "SPIFFS (by its name)"
}

// SPIFFSName reports a name that says SPIFFS image: "spiffs.bin",
// "*.spiffs.bin", "*.spiffs" (case aside). SPIFFS images carry no magic.
func SPIFFSName(name string) bool {
	n := strings.ToLower(path.Base(name))
	return n == "spiffs.bin" || strings.HasSuffix(n, ".spiffs.bin") || strings.HasSuffix(n, ".spiffs")
}

// Recognise tells a filesystem image by its name (SPIFFS) or its first
// bytes (head, at least min(size, HeadLen) of them: a LittleFS
// superblock); nil for any other file. The catalog and inspect use it.
func Recognise(name string, head []byte, size int64) *Image {
	if SPIFFSName(name) {
		return &Image{Kind: SPIFFS}
	}
	if int64(len(head)) < min(size, HeadLen) {
		return nil
	}
	im, err := Parse(head, size)
	if err != nil {
		return nil
	}
	return im
}

// LittleFS's superblock entry, the first of the metadata pair in blocks 0
// and 1 (littlefs SPEC.md, "LFS_TYPE_SUPERBLOCK"): a 32-bit revision
// count, the name tag ("littlefs"), the inline-struct tag and six 32-bit
// little-endian fields. Tags are big-endian and each is stored XORed with
// the one before (the first with 0xffffffff).
const (
	nameTag   = 0x0ff<<20 | 0<<10 | 8    // type LFS_TYPE_SUPERBLOCK, id 0, 8 bytes
	structTag = 0x201<<20 | 0<<10 | 0x18 // type LFS_TYPE_INLINESTRUCT, id 0, 24 bytes
	superLen  = 4 + 4 + 8 + 4 + 24
)

// HeadLen is how much of a file Parse needs: the superblock entry in
// block 0, or in block 1 for blocks of up to 32 KB (ESP cores format with
// 4 KB and 8 KB blocks).
const HeadLen = 32<<10 + superLen

// Parse recognises a LittleFS image from its first bytes (head, at most
// HeadLen of them) and its size: the superblock entry in block 0, or in
// block 1 when block 0 was being rewritten. The image must be the whole
// area it declares (block size × block count), as mklittlefs writes it.
func Parse(head []byte, size int64) (*Image, error) {
	im, err := superblock(head, 0)
	if err != nil {
		// Block 1 sits one block in: try the block sizes littlefs allows
		// (a power of two), and keep the one whose superblock says so.
		for bs := 128; bs+superLen <= len(head); bs <<= 1 {
			if alt, aerr := superblock(head, bs); aerr == nil && int(alt.BlockSize) == bs {
				im, err = alt, nil
				break
			}
		}
	}
	if err != nil {
		return nil, err
	}
	if want := int64(im.BlockSize) * int64(im.BlockCount); want != size {
		return nil, fmt.Errorf("a LittleFS image of %d blocks of %d bytes is %d bytes, the file has %d", im.BlockCount, im.BlockSize, want, size)
	}
	return im, nil
}

func superblock(b []byte, at int) (*Image, error) {
	if at < 0 || len(b) < at+superLen {
		return nil, fmt.Errorf("too short for a LittleFS superblock")
	}
	s := b[at:]
	t1 := binary.BigEndian.Uint32(s[4:]) ^ 0xffffffff
	if t1 != nameTag || string(s[8:16]) != "littlefs" {
		return nil, fmt.Errorf("no LittleFS superblock")
	}
	if t2 := binary.BigEndian.Uint32(s[16:]) ^ t1; t2 != structTag {
		return nil, fmt.Errorf("LittleFS superblock: tag %#08x where the inline struct belongs", t2)
	}
	f := func(i int) uint32 { return binary.LittleEndian.Uint32(s[20+4*i:]) }
	im := &Image{Kind: LittleFS, Version: f(0), BlockSize: f(1), BlockCount: f(2)}
	switch {
	case im.Version>>16 != 2:
		return nil, fmt.Errorf("LittleFS version %d.%d: only 2.x is read by the ESP cores", im.Version>>16, im.Version&0xffff)
	case im.BlockSize < 128 || im.BlockSize > 1<<20 || bits.OnesCount32(im.BlockSize) != 1:
		return nil, fmt.Errorf("LittleFS block size %d is not a power of two from 128 to 1 MiB", im.BlockSize)
	case im.BlockCount < 2:
		return nil, fmt.Errorf("LittleFS block count %d: a filesystem has at least its two superblock blocks", im.BlockCount)
	}
	return im, nil
}

// Build writes an empty LittleFS area of blockCount blocks of blockSize
// bytes with its superblock entry, erased (0xff) elsewhere, for tests and
// the samples: what Parse reads, laid out as the SPEC describes.
func Build(blockSize, blockCount uint32) []byte {
	b := make([]byte, int(blockSize)*int(blockCount))
	for i := range b {
		b[i] = 0xff
	}
	for _, at := range []int{0, int(blockSize)} {
		s := b[at:]
		binary.LittleEndian.PutUint32(s[0:], 1) // revision count
		binary.BigEndian.PutUint32(s[4:], nameTag^0xffffffff)
		copy(s[8:], "littlefs")
		binary.BigEndian.PutUint32(s[16:], structTag^nameTag)
		for i, v := range []uint32{0x00020000, blockSize, blockCount, 255, 0x7fffffff, 1022} {
			binary.LittleEndian.PutUint32(s[20+4*i:], v)
		}
	}
	return b
}
