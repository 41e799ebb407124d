// Package espimage reads the firmware images that ESP8266 and ESP32 devices
// flash over the air, and says what a device would see in them: which chip
// family and model, how much flash the build assumes, its version, and the
// digests a device reports once the image is running.
//
// The format is the one esptool and the Arduino cores write (an 8-byte
// common header, ESP32's 16-byte extended header, segments, a checksum byte
// and optionally an appended SHA-256), plus the ESP8266 Arduino layout of
// eboot followed by the app at 0x1000, and gzip-compressed ESP8266 images.
//
// Parse works on a []byte and does no I/O. It never panics on malformed
// input: it returns a *FormatError naming the byte and what was expected.
package espimage

import (
	"encoding/binary"
	"fmt"
)

// Magic numbers of the formats this package reads.
const (
	Magic        = 0xE9       // first byte of every ESP image (ESP_IMAGE_HEADER_MAGIC)
	AppDescMagic = 0xABCD5432 // esp_app_desc_t.magic_word
	checksumSeed = 0xEF       // ESP_CHECKSUM_MAGIC
	maxSegments  = 16         // ESP_IMAGE_MAX_SEGMENTS

	// ESP8266AppOffset is where elf2bin places the sketch behind eboot.
	ESP8266AppOffset = 0x1000
	// ESP8266 elf2bin stores the file length and a CRC-32 of the whole file
	// (with these two words zeroed) at these offsets.
	esp8266CRCSizeOffset = 0x1010
	esp8266CRCValOffset  = 0x1014
)

// Family is the device family an image is built for. The two families use
// different updaters (ESP8266HTTPUpdate and HTTPUpdate) and cannot run each
// other's images.
type Family uint8

const (
	FamilyUnknown Family = iota
	ESP8266
	ESP32
)

func (f Family) String() string {
	switch f {
	case ESP8266:
		return "ESP8266"
	case ESP32:
		return "ESP32"
	}
	return "unknown"
}

// Chip is the chip id of the ESP32 extended header (esp_chip_id_t). ESP8266
// images carry no chip id; they use ChipESP8266.
type Chip uint16

// Chip ids from ESP-IDF's esp_chip_id_t and esptool's IMAGE_CHIP_ID.
const (
	ChipESP32    Chip = 0x0000
	ChipESP32S2  Chip = 0x0002
	ChipESP32C3  Chip = 0x0005
	ChipESP32S3  Chip = 0x0009
	ChipESP32C2  Chip = 0x000C
	ChipESP32C6  Chip = 0x000D
	ChipESP32H2  Chip = 0x0010
	ChipESP32P4  Chip = 0x0012
	ChipESP32C61 Chip = 0x0014
	ChipESP32C5  Chip = 0x0017
	ChipESP32H21 Chip = 0x0019
	ChipESP32H4  Chip = 0x001C
	ChipESP32E22 Chip = 0x001F
	ChipESP32S31 Chip = 0x0020

	// ChipESP8266 is not an id any header carries; it marks ESP8266 images.
	ChipESP8266 Chip = 0xFFFF
)

var chipNames = map[Chip]string{
	ChipESP32:    "ESP32",
	ChipESP32S2:  "ESP32-S2",
	ChipESP32C3:  "ESP32-C3",
	ChipESP32S3:  "ESP32-S3",
	ChipESP32C2:  "ESP32-C2",
	ChipESP32C6:  "ESP32-C6",
	ChipESP32H2:  "ESP32-H2",
	ChipESP32P4:  "ESP32-P4",
	ChipESP32C61: "ESP32-C61",
	ChipESP32C5:  "ESP32-C5",
	ChipESP32H21: "ESP32-H21",
	ChipESP32H4:  "ESP32-H4",
	ChipESP32E22: "ESP32-E22",
	ChipESP32S31: "ESP32-S31",
	ChipESP8266:  "ESP8266",
}

// Known reports whether c is a chip id this package can name.
func (c Chip) Known() bool { _, ok := chipNames[c]; return ok }

func (c Chip) String() string {
	if n, ok := chipNames[c]; ok {
		return n
	}
	return fmt.Sprintf("chip-0x%04x", uint16(c))
}

// ParseChip returns the chip named s ("ESP32-S3", "esp32s3", "S3").
func ParseChip(s string) (Chip, bool) {
	norm := func(s string) string {
		out := make([]byte, 0, len(s))
		for i := 0; i < len(s); i++ {
			c := s[i]
			if c == '-' || c == '_' {
				continue
			}
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			out = append(out, c)
		}
		return string(out)
	}
	want := norm(s)
	for c, n := range chipNames {
		if m := norm(n); m == want || m == "esp32"+want {
			return c, true
		}
	}
	return 0, false
}

// FlashMode is the SPI mode byte at offset 2 of the header.
type FlashMode uint8

func (m FlashMode) String() string {
	switch m {
	case 0:
		return "QIO"
	case 1:
		return "QOUT"
	case 2:
		return "DIO"
	case 3:
		return "DOUT"
	case 4:
		return "FAST_READ"
	case 5:
		return "SLOW_READ"
	}
	return fmt.Sprintf("mode-%d", uint8(m))
}

// AutoFlash reports an ESP8266 image built with "Mapping defined by
// Hardware and Sketch" (boards.txt eesz.autoflash: build.flash_size=16M,
// FLASH_MAP_SUPPORT): its header says 16 MB whatever the board has, and
// the device picks its flash map at boot. The core skips its flash-size
// check for these ("it makes no sense to check flash size in auto flash
// mode"), and so does otabox.
func (img *Image) AutoFlash() bool {
	return img != nil && img.Family == ESP8266 && img.FlashSize == 16<<20
}

// FormatError says exactly where an image is malformed.
type FormatError struct {
	Offset int    // byte offset in the file (in the inflated data for gzip images)
	Msg    string // what was expected there
	// NotImage says the file does not even start like an image: the
	// message then leads, with no offset (a person ran inspect on a
	// README, not on a damaged image).
	NotImage bool
}

func (e *FormatError) Error() string {
	if e.NotImage {
		return e.Msg
	}
	return fmt.Sprintf("byte 0x%x: %s", e.Offset, e.Msg)
}

func errAt(off int, format string, args ...any) error {
	return &FormatError{Offset: off, Msg: fmt.Sprintf(format, args...)}
}

func le32(b []byte, off int) uint32 { return binary.LittleEndian.Uint32(b[off:]) }
func le16(b []byte, off int) uint16 { return binary.LittleEndian.Uint16(b[off:]) }

// MarshalText makes descriptions (inspect output, golden files, the API)
// read as names rather than numbers.
func (f Family) MarshalText() ([]byte, error)    { return []byte(f.String()), nil }
func (c Chip) MarshalText() ([]byte, error)      { return []byte(c.String()), nil }
func (m FlashMode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText reads the names MarshalText writes, so that descriptions
// round-trip through build-time manifests.
func (f *Family) UnmarshalText(b []byte) error {
	for _, v := range []Family{FamilyUnknown, ESP8266, ESP32} {
		if v.String() == string(b) {
			*f = v
			return nil
		}
	}
	return fmt.Errorf("unknown family %q", b)
}

func (c *Chip) UnmarshalText(b []byte) error {
	if v, ok := ParseChip(string(b)); ok {
		*c = v
		return nil
	}
	var id uint16
	if _, err := fmt.Sscanf(string(b), "chip-0x%04x", &id); err != nil {
		return fmt.Errorf("unknown chip %q", b)
	}
	*c = Chip(id)
	return nil
}

func (m *FlashMode) UnmarshalText(b []byte) error {
	for v := FlashMode(0); v < 8; v++ {
		if v.String() == string(b) {
			*m = v
			return nil
		}
	}
	var n uint8
	if _, err := fmt.Sscanf(string(b), "mode-%d", &n); err != nil {
		return fmt.Errorf("unknown flash mode %q", b)
	}
	*m = FlashMode(n)
	return nil
}
