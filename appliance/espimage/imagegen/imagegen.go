// Package imagegen builds structurally valid ESP8266 and ESP32 firmware
// images: the header, segment table, checksum, appended SHA-256, elf2bin
// CRC and app descriptor a device and espimage check. The code inside is
// filler, so the images do not boot; they exist so that a fresh clone has
// real-looking firmware to serve and tests can make any variant they need.
package imagegen

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"

	"otabox/appliance/espimage"
)

// Spec describes the image to build. Zero values pick sensible defaults.
type Spec struct {
	Family    espimage.Family
	Chip      espimage.Chip      // ESP32 family only; default ESP32
	Size      int                // approximate file size in bytes; default 64 KiB
	FlashMode espimage.FlashMode // default DIO
	// FlashSize in bytes: 1, 2, 4 ... MB (ESP8266 also 256/512 KB). Default 4 MB.
	FlashSize int64
	Project   string
	Version   string
	Date      string // __DATE__ form, "Nov 26 2026" (ESP32 app descriptor)
	Time      string // __TIME__ form, "19:53:16"
	NoHash    bool   // ESP32: leave out the appended SHA-256
	// SecureVersion is the ESP32 app descriptor's secure_version, the
	// anti-rollback counter.
	SecureVersion uint32
	Seed          uint64 // varies the filler bytes
}

// Build returns the image bytes for s.
func Build(s Spec) ([]byte, error) {
	if s.Size == 0 {
		s.Size = 64 << 10
	}
	if s.FlashSize == 0 {
		s.FlashSize = 4 << 20
	}
	if s.FlashMode == 0 && s.Family != 0 {
		s.FlashMode = 2 // DIO, what most boards use
	}
	rng := rand.New(rand.NewPCG(s.Seed, uint64(s.Size)))
	switch s.Family {
	case espimage.ESP8266:
		return build8266(s, rng)
	case espimage.ESP32:
		return build32(s, rng)
	}
	return nil, fmt.Errorf("imagegen: unknown family %v", s.Family)
}

// Gzip compresses an image the way `gzip -9` does for ESP8266 OTA.
func Gzip(img []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(img)
	zw.Close()
	return buf.Bytes()
}

// Gunzip inflates a gzip member the way the ESP8266 boot loader does:
// a 32 KB window (any standard inflater's) and the ISIZE trailer, which
// eboot reads to know how much to write, checked against what came out.
func Gunzip(gz []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, err
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		return nil, err
	}
	if len(gz) < 4 || binary.LittleEndian.Uint32(gz[len(gz)-4:]) != uint32(len(out)) {
		return nil, fmt.Errorf("imagegen: ISIZE trailer does not match the %d bytes inflated", len(out))
	}
	return out, nil
}

type segment struct {
	addr uint32
	data []byte
}

func build8266(s Spec, rng *rand.Rand) ([]byte, error) {
	sizeNibble, ok := map[int64]byte{256 << 10: 1, 512 << 10: 0, 1 << 20: 2, 2 << 20: 3, 4 << 20: 4, 8 << 20: 8, 16 << 20: 9}[s.FlashSize]
	if !ok {
		return nil, fmt.Errorf("imagegen: no ESP8266 flash size of %d bytes", s.FlashSize)
	}
	hdr3 := sizeNibble << 4 // frequency nibble 0: 40 MHz
	var out bytes.Buffer
	eboot := []segment{
		{0x4010f000, filler(rng, 0xD00)},
		{0x3fffa000, append([]byte("eboot\x00"), filler(rng, 0x72)...)},
	}
	writeImage(&out, espimage.Magic, byte(s.FlashMode), hdr3, 0x4010f000, nil, eboot)
	for out.Len() < espimage.ESP8266AppOffset {
		out.WriteByte(0xAA)
	}
	app := max(s.Size-espimage.ESP8266AppOffset-64, 1024)
	rodata := []byte(fmt.Sprintf("OTABOX:project=%s;version=%s;\x00", s.Project, s.Version))
	irom := filler(rng, app*3/4)
	copy(irom, make([]byte, 8)) // reserved for elf2bin's size and CRC words
	segs := []segment{
		{0x40201010, irom},
		{0x40100000, filler(rng, app/8)},
		{0x40105000, filler(rng, 0x40)},
		{0x3ffe8000, filler(rng, app/32)},
		{0x3ffe8800, append(rodata, filler(rng, app/16)...)},
	}
	writeImage(&out, espimage.Magic, byte(s.FlashMode), hdr3, 0x4010f4a4, nil, segs)
	b := out.Bytes()
	binary.LittleEndian.PutUint32(b[0x1010:], uint32(len(b)))
	binary.LittleEndian.PutUint32(b[0x1014:], espimage.CRC8266(b))
	return b, nil
}

func build32(s Spec, rng *rand.Rand) ([]byte, error) {
	nibble := -1
	for n := 0; n <= 7; n++ {
		if int64(1<<20)<<n == s.FlashSize {
			nibble = n
		}
	}
	if nibble < 0 {
		return nil, fmt.Errorf("imagegen: no ESP32 flash size of %d bytes", s.FlashSize)
	}
	ext := make([]byte, 16)
	ext[0] = 0xEE // wp_pin disabled
	binary.LittleEndian.PutUint16(ext[4:], uint16(s.Chip))
	binary.LittleEndian.PutUint16(ext[9:], 399) // max_chip_rev_full v3.99
	if !s.NoHash {
		ext[15] = 1
	}
	desc := make([]byte, 256)
	binary.LittleEndian.PutUint32(desc, espimage.AppDescMagic)
	binary.LittleEndian.PutUint32(desc[4:], s.SecureVersion)
	copy(desc[16:48], s.Version)
	copy(desc[48:80], s.Project)
	copy(desc[80:96], s.Time)
	copy(desc[96:112], s.Date)
	copy(desc[112:144], "v5.1.4")
	for i := 144; i < 176; i++ {
		desc[i] = byte(rng.Uint32())
	}
	app := max(s.Size-24-4*8-16-32, 2048)
	segs := []segment{
		{0x3f400020, append(desc, filler(rng, align4(app/4))...)},
		{0x3ffb0000, filler(rng, align4(app/16))},
		{0x40080000, filler(rng, align4(app/8))},
		{0x400d0020, filler(rng, align4(app/2))},
	}
	var out bytes.Buffer
	writeImage(&out, espimage.Magic, byte(s.FlashMode), byte(nibble)<<4|0xF, 0x40081234, ext, segs)
	if !s.NoHash {
		sum := sha256.Sum256(out.Bytes())
		out.Write(sum[:])
	}
	return out.Bytes(), nil
}

// writeImage appends a header, the segments, zero padding and the checksum
// as the last byte of a 16-byte line.
func writeImage(out *bytes.Buffer, magic, mode, sizeFreq byte, entry uint32, ext []byte, segs []segment) {
	start := out.Len()
	out.Write([]byte{magic, byte(len(segs)), mode, sizeFreq})
	binary.Write(out, binary.LittleEndian, entry)
	out.Write(ext)
	var sum byte = 0xEF
	for _, sg := range segs {
		binary.Write(out, binary.LittleEndian, sg.addr)
		binary.Write(out, binary.LittleEndian, uint32(len(sg.data)))
		out.Write(sg.data)
		for _, v := range sg.data {
			sum ^= v
		}
	}
	for (out.Len()-start+1)%16 != 0 {
		out.WriteByte(0)
	}
	out.WriteByte(sum)
}

// filler makes n bytes that compress about as well as Xtensa code does:
// runs drawn from a small vocabulary of instruction-like triples.
func filler(rng *rand.Rand, n int) []byte {
	var vocab [96][3]byte
	for i := range vocab {
		vocab[i] = [3]byte{byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())}
	}
	b := make([]byte, 0, n+3)
	for len(b) < n {
		if rng.IntN(5) == 0 {
			b = append(b, byte(rng.Uint32()))
			continue
		}
		v := vocab[rng.IntN(len(vocab))]
		b = append(b, v[:]...)
	}
	return b[:n]
}

func align4(n int) int { return (n + 3) &^ 3 }
