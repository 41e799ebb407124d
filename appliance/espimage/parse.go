package espimage

import (
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
)

// MaxInflated bounds how far a gzip image is inflated. No ESP8266 has more
// than 16 MB of flash, so a larger payload is not an image but a bomb.
const MaxInflated = 16 << 20

// Segment is one {load address, length, data} record of an image.
type Segment struct {
	Offset int    `json:"offset"` // file offset of the segment's data
	Addr   uint32 `json:"addr"`
	Len    uint32 `json:"len"`
}

// Header is one parsed ESP image: the common header and its segments. An
// ESP8266 Arduino file holds two of them (eboot at 0, the sketch at 0x1000).
type Header struct {
	Offset     int       `json:"offset"` // where the image starts in the file
	Segments   []Segment `json:"segments"`
	Mode       FlashMode `json:"-"`
	SizeNibble uint8     `json:"-"`
	FreqNibble uint8     `json:"-"`
	Entry      uint32    `json:"entry"`
	Checksum   uint8     `json:"checksum"` // the stored checksum byte
	ChecksumOK bool      `json:"checksum_ok"`
	End        int       `json:"end"` // offset just past the checksum byte
}

// AppDesc is ESP-IDF's esp_app_desc_t, found at offset 32 of every ESP32
// app image built with ESP-IDF (and so with arduino-esp32).
type AppDesc struct {
	SecureVersion uint32 `json:"secure_version"`
	Version       string `json:"version"`
	Project       string `json:"project"`
	Time          string `json:"time"` // __TIME__, "19:53:16"
	Date          string `json:"date"` // __DATE__, "Nov 26 2026"
	IDFVersion    string `json:"idf_version"`
	ELFSHA256     string `json:"elf_sha256"`
}

// Digests are what a device reports about the image it runs, and what the
// server sends with the image. All hex is lower-case.
type Digests struct {
	// FileMD5 and FileSHA256 cover the bytes as served (x-MD5, x-SHA256).
	FileMD5    string `json:"file_md5"`
	FileSHA256 string `json:"file_sha256"`
	// RunningMD5 are the values x-*-sketch-md5 takes once this image runs.
	// The ESP8266 Updater rewrites the flash-mode byte to the chip's mode as
	// it flashes, so an ESP8266 image has one per mode (QIO, QOUT, DIO, DOUT);
	// an ESP32 image has one.
	RunningMD5 []string `json:"running_md5"`
	// RunningSHA256 is what an ESP32 reports as x-ESP32-sketch-sha256 (the
	// image's SHA-256 without its appended digest); empty for ESP8266.
	RunningSHA256 string `json:"running_sha256,omitempty"`
}

// Image is what Parse learns from a firmware file.
type Image struct {
	Family     Family `json:"family"`
	Chip       Chip   `json:"chip"`
	Compressed bool   `json:"compressed"` // gzip ESP8266 image; fields describe the inflated image
	FileSize   int    `json:"file_size"`  // bytes as stored and served
	// ImageLen is the image's length as the device measures it once flashed
	// (x-*-sketch-size): up to the checksum line, plus the appended SHA-256.
	ImageLen  int       `json:"image_len"`
	FlashMode FlashMode `json:"flash_mode"`
	// FlashSize is the flash size the build assumes, from the header's size
	// nibble, in bytes. Zero for the ESP8266 "c1" layouts the core does not
	// check.
	FlashSize    int64   `json:"flash_size"`
	FlashFreq    string  `json:"flash_freq"`
	Boot         *Header `json:"boot,omitempty"` // ESP8266 eboot, in front of the app
	App          Header  `json:"app"`
	MinChipRev   uint16  `json:"min_chip_rev,omitempty"` // ESP32: min_chip_rev_full
	MaxChipRev   uint16  `json:"max_chip_rev,omitempty"` // ESP32: max_chip_rev_full
	HashAppended bool    `json:"hash_appended"`
	// CRC is true when the file carries elf2bin's whole-file CRC (ESP8266);
	// it was verified.
	CRC     bool     `json:"crc"`
	Desc    *AppDesc `json:"app_desc,omitempty"`
	Project string   `json:"project,omitempty"`
	Version string   `json:"version,omitempty"`
	// Date and Time are the build stamp in the catalog's format (MM/DD/YY,
	// HH:MM:SS), when the image carries one.
	Date string `json:"date,omitempty"`
	Time string `json:"time,omitempty"`
	// Trailing counts bytes after the image (a secure-boot signature block,
	// for example); they are served but not part of the running image.
	Trailing int `json:"trailing,omitempty"`
	// Signature is the signature behind the image, when the file has one
	// (see Verify).
	Signature *Signature `json:"signature,omitempty"`
	Digests   Digests    `json:"digests"`
}

// Parse reads a firmware file. It validates the structure a device or its
// bootloader checks (magic, segment table, checksum, appended SHA-256,
// elf2bin CRC) and computes the digests the device will report.
func Parse(b []byte) (*Image, error) {
	if sig, ok := esp8266Signature(b); ok {
		// elf2bin's CRC and length cover the image without the signature:
		// only the signed bytes are an image.
		if img, err := parseFile(b[:sig.Offset]); err == nil && img.Family == ESP8266 && img.Trailing == 0 {
			img.Signature = sig
			img.FileSize = len(b)
			img.Digests.FileMD5, img.Digests.FileSHA256 = md5hex(b), sha256hex(b)
			if !img.Compressed {
				img.Trailing = len(b) - img.ImageLen
			}
			return img, nil
		}
	}
	img, err := parseFile(b)
	if err != nil {
		return nil, err
	}
	if img.Family == ESP32 && img.Trailing > 0 {
		if sig := secureBootV2(b, img.ImageLen); sig != nil {
			img.Signature = sig
			// A device that checks signatures counts the padding and the
			// sector as part of its running image (esp_image_format.c adds
			// them to image_len), so its sketch MD5 is the whole file's.
			img.Digests.RunningMD5 = append(img.Digests.RunningMD5, img.Digests.FileMD5)
		}
	}
	return img, nil
}

// parseFile is Parse without looking for a signature.
func parseFile(b []byte) (*Image, error) {
	if len(b) >= 2 && b[0] == 0x1F && b[1] == 0x8B {
		return parseGzip(b)
	}
	img, err := parseRaw(b)
	if err != nil {
		return nil, err
	}
	img.FileSize = len(b)
	img.Digests.RunningMD5, img.Digests.RunningSHA256 = runningDigests(img, b[:img.ImageLen])
	img.Digests.FileMD5, img.Digests.FileSHA256 = fileDigests(img, b)
	return img, nil
}

// fileDigests hashes the whole file, reusing a running digest where the
// running image is the whole file as stored: an ESP8266 image's MD5 with
// its own SPI mode byte, an ESP32 image's MD5 (a first start hashing
// 10,000 ESP8266 images spent a fifth of its MD5 time on the file's).
func fileDigests(img *Image, b []byte) (md5s, sha string) {
	whole := img.ImageLen == len(b)
	switch {
	case whole && img.Family == ESP8266 && int(b[2]) < len(img.Digests.RunningMD5):
		md5s = img.Digests.RunningMD5[b[2]]
	case whole && img.Family == ESP32 && len(img.Digests.RunningMD5) == 1:
		md5s = img.Digests.RunningMD5[0]
	default:
		md5s = md5hex(b)
	}
	if whole && img.Family == ESP32 && !img.HashAppended && img.Digests.RunningSHA256 != "" {
		sha = img.Digests.RunningSHA256
	} else {
		sha = sha256hex(b)
	}
	return md5s, sha
}

func parseGzip(b []byte) (*Image, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, errAt(0, "gzip header: %v", err)
	}
	zr.Multistream(false)
	inner, err := io.ReadAll(io.LimitReader(zr, MaxInflated+1))
	if err != nil {
		return nil, errAt(0, "gzip stream: %v", err)
	}
	if len(inner) > MaxInflated {
		return nil, errAt(0, "gzip image inflates past %d bytes", MaxInflated)
	}
	img, err := parseRaw(inner)
	if err != nil {
		var fe *FormatError
		if errors.As(err, &fe) {
			fe.Msg = "inflated image: " + fe.Msg
		}
		return nil, err
	}
	if img.Family != ESP8266 {
		return nil, errAt(0, "gzip-compressed %s image: only ESP8266 devices inflate images", img.Family)
	}
	img.Compressed = true
	img.FileSize = len(b)
	img.Digests.FileMD5, img.Digests.FileSHA256 = md5hex(b), sha256hex(b)
	img.Digests.RunningMD5, _ = runningDigests(img, inner[:img.ImageLen])
	return img, nil
}

func parseRaw(b []byte) (*Image, error) {
	if len(b) > 0 && b[0] != Magic {
		return nil, &FormatError{NotImage: true, Msg: fmt.Sprintf("not an ESP firmware image (starts with %q; an image starts with byte 0xe9, or gzip 1f 8b)", b[:min(2, len(b))])}
	}
	if len(b) < 8 {
		return nil, errAt(len(b), "file ends after %d bytes; an image header needs 8", len(b))
	}
	if isESP32(b) {
		return parseESP32(b)
	}
	return parseESP8266(b)
}

// isESP32 tells the families apart as spec'd: an IDF app carries the app
// descriptor magic at offset 32; failing that, an extended header with the
// disabled-WP marker, a boolean hash flag and a known chip id.
func isESP32(b []byte) bool {
	if len(b) >= 36 && le32(b, 32) == AppDescMagic {
		return true
	}
	return len(b) >= 24 && b[8] == 0xEE && b[23] <= 1 && Chip(le16(b, 12)).Known()
}

func parseESP32(b []byte) (*Image, error) {
	if len(b) < 24 {
		return nil, errAt(len(b), "file ends inside the ESP32 extended header (needs 24 bytes)")
	}
	h, err := parseHeader(b, 0, 24, ESP32, nil)
	if err != nil {
		return nil, err
	}
	img := &Image{
		Family:     ESP32,
		Chip:       Chip(le16(b, 12)),
		App:        *h,
		FlashMode:  h.Mode,
		MinChipRev: le16(b, 15),
		MaxChipRev: le16(b, 17),
	}
	switch b[23] {
	case 0:
	case 1:
		img.HashAppended = true
	default:
		return nil, errAt(23, "hash_appended must be 0 or 1, found %d", b[23])
	}
	if h.SizeNibble > 7 {
		return nil, errAt(3, "ESP32 flash size nibble must be 0-7 (1-128 MB), found %d", h.SizeNibble)
	}
	img.FlashSize = 1 << 20 << h.SizeNibble
	img.FlashFreq = esp32Freq(img.Chip, h.FreqNibble)
	if !h.ChecksumOK {
		return nil, errAt(h.End-1, "checksum byte is 0x%02x, segments give 0x%02x", h.Checksum, checksum(b, h.Segments, nil))
	}
	img.ImageLen = h.End
	if img.HashAppended {
		if len(b) < h.End+32 {
			return nil, errAt(len(b), "header says a SHA-256 is appended at 0x%x, but the file ends first", h.End)
		}
		sum := sha256.Sum256(b[:h.End])
		if !bytes.Equal(sum[:], b[h.End:h.End+32]) {
			return nil, errAt(h.End, "appended SHA-256 does not match the image (expected %x)", sum)
		}
		img.ImageLen += 32
	}
	img.Trailing = len(b) - img.ImageLen
	if len(h.Segments) > 0 && h.Segments[0].Len >= 256 && le32(b, 32) == AppDescMagic {
		img.Desc = parseAppDesc(b[32 : 32+256])
		img.Project, img.Version = img.Desc.Project, img.Desc.Version
		img.Date, img.Time = buildStamp(img.Desc.Date, img.Desc.Time)
	}
	return img, nil
}

func parseESP8266(b []byte) (*Image, error) {
	// elf2bin's CRC words sit inside the app's first segment and were written
	// after its checksum was computed: count them as zero for the checksum,
	// and check the CRC itself instead.
	crc := len(b) >= esp8266CRCValOffset+4 && int(le32(b, esp8266CRCSizeOffset)) == len(b)
	var zeroed []int
	if crc {
		zeroed = []int{esp8266CRCSizeOffset, esp8266CRCValOffset}
		if want, got := le32(b, esp8266CRCValOffset), crc8266(b); want != got {
			return nil, errAt(esp8266CRCValOffset, "elf2bin CRC is 0x%08x, file gives 0x%08x", want, got)
		}
	}
	first, err := parseHeader(b, 0, 8, ESP8266, nil)
	if err != nil {
		return nil, err
	}
	if !first.ChecksumOK {
		return nil, errAt(first.End-1, "checksum byte is 0x%02x, segments give 0x%02x", first.Checksum, checksum(b, first.Segments, nil))
	}
	img := &Image{Family: ESP8266, Chip: ChipESP8266, FlashMode: first.Mode, CRC: crc}
	size, ok := esp8266FlashSize(first.SizeNibble)
	if !ok {
		return nil, errAt(3, "ESP8266 flash size nibble %d is not one of 0-6, 8, 9", first.SizeNibble)
	}
	img.FlashSize = size
	img.FlashFreq = esp8266Freq(first.FreqNibble)
	if first.End <= ESP8266AppOffset && len(b) > ESP8266AppOffset {
		// Arduino layout: eboot, 0xAA padding, the sketch at 0x1000.
		if b[ESP8266AppOffset] != Magic {
			return nil, errAt(ESP8266AppOffset, "expected the sketch's magic 0xe9 behind eboot, found 0x%02x", b[ESP8266AppOffset])
		}
		app, err := parseHeader(b, ESP8266AppOffset, 8, ESP8266, zeroed)
		if err != nil {
			return nil, err
		}
		if !app.ChecksumOK && !crc {
			return nil, errAt(app.End-1, "sketch checksum byte is 0x%02x, segments give 0x%02x", app.Checksum, checksum(b, app.Segments, zeroed))
		}
		img.Boot, img.App = first, *app
	} else {
		img.App = *first
	}
	img.ImageLen = img.App.End
	img.Trailing = len(b) - img.ImageLen
	img.Project, img.Version = findMarker(b[:img.ImageLen])
	return img, nil
}

// parseHeader reads the image starting at off whose segment table begins
// hdrLen bytes in. zeroed lists file offsets of 32-bit words to count as
// zero in the checksum.
func parseHeader(b []byte, off, hdrLen int, fam Family, zeroed []int) (*Header, error) {
	if len(b) < off+hdrLen {
		return nil, errAt(len(b), "file ends inside the image header at 0x%x", off)
	}
	h := &Header{
		Offset:     off,
		Mode:       FlashMode(b[off+2]),
		SizeNibble: b[off+3] >> 4,
		FreqNibble: b[off+3] & 0x0F,
		Entry:      le32(b, off+4),
	}
	n := int(b[off+1])
	if n == 0 || n > maxSegments {
		return nil, errAt(off+1, "segment count must be 1-%d, found %d", maxSegments, n)
	}
	maxMode := FlashMode(3)
	if fam == ESP32 {
		maxMode = 5
	}
	if h.Mode > maxMode {
		return nil, errAt(off+2, "SPI flash mode must be 0-%d, found %d", maxMode, h.Mode)
	}
	pos := off + hdrLen
	for i := 0; i < n; i++ {
		if len(b)-pos < 8 {
			return nil, errAt(pos, "file ends inside the header of segment %d of %d", i, n)
		}
		s := Segment{Offset: pos + 8, Addr: le32(b, pos), Len: le32(b, pos+4)}
		if int64(s.Len) > int64(len(b)-s.Offset) {
			return nil, errAt(pos+4, "segment %d claims %d bytes, only %d remain", i, s.Len, len(b)-s.Offset)
		}
		if fam == ESP32 && s.Len%4 != 0 {
			return nil, errAt(pos+4, "segment %d length %d is not a multiple of 4", i, s.Len)
		}
		h.Segments = append(h.Segments, s)
		pos = s.Offset + int(s.Len)
	}
	// The checksum is the last byte of the 16-byte line after the segments.
	h.End = off + (pos-off+16)&^15
	if h.End > len(b) {
		return nil, errAt(len(b), "file ends before the checksum byte at 0x%x", h.End-1)
	}
	h.Checksum = b[h.End-1]
	h.ChecksumOK = h.Checksum == checksum(b, h.Segments, zeroed)
	return h, nil
}

func checksum(b []byte, segs []Segment, zeroed []int) byte {
	var c byte = checksumSeed
	for _, s := range segs {
		for _, v := range b[s.Offset : s.Offset+int(s.Len)] {
			c ^= v
		}
	}
	for _, z := range zeroed { // undo words that were written after the checksum
		for _, s := range segs {
			if z >= s.Offset && z+4 <= s.Offset+int(s.Len) {
				c ^= b[z] ^ b[z+1] ^ b[z+2] ^ b[z+3]
			}
		}
	}
	return c
}

// crc8266 is eboot's CRC-32 (polynomial 0x04c11db7, MSB first, no final
// xor) over the whole file with the size and CRC words taken as zero.
func crc8266(b []byte) uint32 {
	crc := uint32(0xFFFFFFFF)
	if len(b) <= esp8266CRCSizeOffset {
		return crcMSB(crc, b)
	}
	crc = crcMSB(crc, b[:esp8266CRCSizeOffset])
	var zero [esp8266CRCValOffset + 4 - esp8266CRCSizeOffset]byte
	crc = crcMSB(crc, zero[:min(len(zero), len(b)-esp8266CRCSizeOffset)])
	if len(b) > esp8266CRCValOffset+4 {
		crc = crcMSB(crc, b[esp8266CRCValOffset+4:])
	}
	return crc
}

// crcMSB runs the MSB-first CRC-32 over b from crc, eight bytes at a time
// (slicing-by-8): a first start checks the CRC of every ESP8266 image it
// reads, and byte at a time it was most of parsing.
func crcMSB(crc uint32, b []byte) uint32 {
	t := &crcTables
	for len(b) >= 8 {
		crc ^= uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		crc = t[7][crc>>24] ^ t[6][byte(crc>>16)] ^ t[5][byte(crc>>8)] ^ t[4][byte(crc)] ^
			t[3][b[4]] ^ t[2][b[5]] ^ t[1][b[6]] ^ t[0][b[7]]
		b = b[8:]
	}
	for _, v := range b {
		crc = crc<<8 ^ t[0][byte(crc>>24)^v]
	}
	return crc
}

// crcTables are crcMSB's tables, computed once: [0] is the byte-at-a-time
// table of polynomial 0x04c11db7, [k] the same for a byte followed by k
// zero bytes.
var crcTables = func() (t [8][256]uint32) {
	for i := range t[0] {
		c := uint32(i) << 24
		for k := 0; k < 8; k++ {
			if c&0x80000000 != 0 {
				c = c<<1 ^ 0x04C11DB7
			} else {
				c <<= 1
			}
		}
		t[0][i] = c
	}
	for k := 1; k < 8; k++ {
		for i := range t[k] {
			c := t[k-1][i]
			t[k][i] = c<<8 ^ t[0][c>>24]
		}
	}
	return t
}()

// CRC8266 returns the elf2bin CRC for b, so that builders can stamp it.
func CRC8266(b []byte) uint32 { return crc8266(b) }

// RestampCRC8266 writes b's elf2bin CRC again after its bytes changed (a
// flasher setting the header's flash mode or size), when b carries one;
// it reports whether it did.
func RestampCRC8266(b []byte) bool {
	if len(b) < esp8266CRCValOffset+4 || int(le32(b, esp8266CRCSizeOffset)) != len(b) {
		return false
	}
	binary.LittleEndian.PutUint32(b[esp8266CRCValOffset:], crc8266(b))
	return true
}

func esp8266FlashSize(n uint8) (int64, bool) {
	switch n {
	case 0:
		return 512 << 10, true
	case 1:
		return 256 << 10, true
	case 2:
		return 1 << 20, true
	case 3:
		return 2 << 20, true
	case 4:
		return 4 << 20, true
	case 5, 6: // 2M-c1, 4M-c1: the core maps these to 0 and skips its check
		return 0, true
	case 8:
		return 8 << 20, true
	case 9:
		return 16 << 20, true
	}
	return 0, false
}

func esp8266Freq(n uint8) string {
	switch n {
	case 0:
		return "40MHz"
	case 1:
		return "26MHz"
	case 2:
		return "20MHz"
	case 0xF:
		return "80MHz"
	}
	return fmt.Sprintf("freq-%d", n)
}

// esp32Freq names the frequency nibble; its meaning varies by chip
// (esptool targets/*.py FLASH_FREQUENCY).
func esp32Freq(chip Chip, n uint8) string {
	table := map[uint8]string{0: "40MHz", 1: "26MHz", 2: "20MHz", 0xF: "80MHz"}
	switch chip {
	case ChipESP32C2:
		table = map[uint8]string{0: "30MHz", 1: "20MHz", 2: "15MHz", 0xF: "60MHz"}
	case ChipESP32H2:
		table = map[uint8]string{0: "24MHz", 1: "16MHz", 2: "12MHz", 0xF: "48MHz"}
	}
	if f, ok := table[n]; ok {
		return f
	}
	return fmt.Sprintf("freq-%d", n)
}

func parseAppDesc(d []byte) *AppDesc {
	return &AppDesc{
		SecureVersion: le32(d, 4),
		Version:       cString(d[16:48]),
		Project:       cString(d[48:80]),
		Time:          cString(d[80:96]),
		Date:          cString(d[96:112]),
		IDFVersion:    cString(d[112:144]),
		ELFSHA256:     hex.EncodeToString(d[144:176]),
	}
}

// cString reads a NUL-terminated field and keeps only printable ASCII, so a
// garbled descriptor can never put control bytes into logs or pages.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	var sb strings.Builder
	for _, c := range b {
		if c >= 0x20 && c < 0x7F {
			sb.WriteByte(c)
		} else {
			sb.WriteByte('?')
		}
	}
	return sb.String()
}

var months = [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

// buildStamp turns __DATE__ ("Nov  6 2026") and __TIME__ ("19:53:16") into
// the catalog's MM/DD/YY and HH:MM:SS. It returns empty strings for anything
// else.
func buildStamp(date, tm string) (string, string) {
	f := strings.Fields(date)
	if len(f) != 3 || len(f[2]) != 4 {
		return "", ""
	}
	mon := -1
	for i, m := range months {
		if m == f[0] {
			mon = i + 1
		}
	}
	var day int
	if _, err := fmt.Sscanf(f[1], "%d", &day); err != nil || mon < 0 || day < 1 || day > 31 {
		return "", ""
	}
	var hh, mm, ss int
	if n, _ := fmt.Sscanf(tm, "%2d:%2d:%2d", &hh, &mm, &ss); n != 3 || len(tm) != 8 || hh > 23 || mm > 59 || ss > 60 {
		return "", ""
	}
	return fmt.Sprintf("%02d/%02d/%s", mon, day, f[2][2:]), tm
}

// Markers let an ESP8266 sketch, which has no app descriptor, carry its
// project and version: a string "OTABOX:project=NAME;version=V;" anywhere
// in the image (ESPEMU: is the same marker as the device emulator writes).
var markerTags = [][]byte{[]byte("OTABOX:"), []byte("ESPEMU:")}

func findMarker(b []byte) (project, version string) {
	for _, tag := range markerTags {
		i := bytes.Index(b, tag)
		if i < 0 {
			continue
		}
		rest := b[i+len(tag):]
		if j := bytes.IndexByte(rest, 0); j >= 0 {
			rest = rest[:j]
		}
		if len(rest) > 160 {
			rest = rest[:160]
		}
		for _, kv := range strings.Split(cString(rest), ";") {
			k, v, _ := strings.Cut(kv, "=")
			switch strings.TrimSpace(k) {
			case "project":
				project = strings.TrimSpace(v)
			case "version":
				version = strings.TrimSpace(v)
			}
		}
		return project, version
	}
	return "", ""
}

func runningDigests(img *Image, flash []byte) (md5s []string, sha string) {
	if img.Family == ESP32 {
		body := flash
		if img.HashAppended {
			body = flash[:len(flash)-32]
		}
		return []string{md5hex(flash)}, sha256hex(body)
	}
	// The Updater writes the chip's SPI mode into byte 2 as it flashes.
	patched := make([]byte, 8)
	copy(patched, flash[:8])
	for mode := byte(0); mode <= 3; mode++ {
		patched[2] = mode
		h := md5.New()
		h.Write(patched)
		h.Write(flash[8:])
		md5s = append(md5s, hex.EncodeToString(h.Sum(nil)))
	}
	return md5s, ""
}

func md5hex(b []byte) string    { s := md5.Sum(b); return hex.EncodeToString(s[:]) }
func sha256hex(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
