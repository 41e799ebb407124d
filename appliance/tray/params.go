package tray

import (
	"crypto/sha256"
	"fmt"
	"strings"

	"otabox/appliance/espimage"
	"otabox/appliance/romloader"
)

// FlashParams are the flash mode, size and frequency the bootloader's
// header tells the chip's ROM, as the image at the bootloader offset
// carries them (byte 2: mode; byte 3: size in the high nibble, frequency
// in the low one; esptool documentation, "Firmware Image Format"). "keep"
// (or "") writes the image as it is; Size "detect" takes the size from
// the flash chip's JEDEC id.
type FlashParams struct {
	Mode, Size, Freq string
}

var flashModes = map[string]byte{"qio": 0, "qout": 1, "dio": 2, "dout": 3}

// The size nibble's codes differ between the ESP8266 and the ESP32 family.
var (
	sizes8266 = map[string]byte{"512KB": 0x0, "256KB": 0x1, "1MB": 0x2, "2MB": 0x3, "4MB": 0x4, "2MB-c1": 0x5, "4MB-c1": 0x6, "8MB": 0x8, "16MB": 0x9}
	sizes32   = map[string]byte{"1MB": 0x0, "2MB": 0x1, "4MB": 0x2, "8MB": 0x3, "16MB": 0x4, "32MB": 0x5, "64MB": 0x6, "128MB": 0x7}
	freqs     = map[string]byte{"40m": 0x0, "26m": 0x1, "20m": 0x2, "80m": 0xf}
)

func keep(s string) bool { return s == "" || s == "keep" }

// Check refuses parameters no chip takes, before any board is touched.
func (p FlashParams) Check() error {
	if _, ok := flashModes[p.Mode]; !keep(p.Mode) && !ok {
		return fmt.Errorf("flash mode %q: qio, qout, dio, dout or keep", p.Mode)
	}
	if _, ok := freqs[p.Freq]; !keep(p.Freq) && !ok {
		return fmt.Errorf("flash frequency %q: 80m, 40m, 26m, 20m or keep", p.Freq)
	}
	_, a := sizes8266[p.Size]
	_, b := sizes32[p.Size]
	if !keep(p.Size) && p.Size != "detect" && !a && !b {
		return fmt.Errorf("flash size %q: detect, keep, or 1MB, 2MB, 4MB, 8MB, 16MB (ESP8266 also 512KB, 256KB, 2MB-c1, 4MB-c1)", p.Size)
	}
	return nil
}

func (p FlashParams) none() bool { return keep(p.Mode) && keep(p.Size) && keep(p.Freq) }

// apply returns parts with p set in the header of the image at chip's
// bootloader offset (the ESP8266's app at 0), and its appended SHA-256,
// if it has one, computed again: the ROM checks it. flashSize is the
// detected size in bytes for "detect".
func (p FlashParams) apply(parts []Part, chip *romloader.Chip, flashSize int64) ([]Part, error) {
	if p.none() {
		return parts, nil
	}
	out := append([]Part(nil), parts...)
	for i, part := range out {
		if part.Offset != chip.BootloaderOffset {
			continue
		}
		b := append([]byte(nil), part.Data...)
		if len(b) < 24 || b[0] != espimage.Magic {
			return nil, fmt.Errorf("%s at 0x%x is not an image: its flash parameters cannot be set", part.Name, part.Offset)
		}
		if !keep(p.Mode) {
			b[2] = flashModes[p.Mode]
		}
		size := p.Size
		if size == "detect" {
			if size = sizeName(flashSize); size == "" {
				return nil, fmt.Errorf("flash size: the flash chip's id names no size otabox knows")
			}
		}
		if !keep(size) {
			codes := sizes32
			if chip.Name == "ESP8266" {
				codes = sizes8266
			}
			c, ok := codes[size]
			if !ok {
				return nil, fmt.Errorf("flash size %s is not one an %s takes", size, chip.Name)
			}
			b[3] = c<<4 | b[3]&0x0f
		}
		if !keep(p.Freq) {
			b[3] = b[3]&0xf0 | freqs[p.Freq]
		}
		if chip.Name == "ESP8266" {
			espimage.RestampCRC8266(b) // elf2bin's CRC covers the header too
		}
		if chip.Name != "ESP8266" && b[23] == 1 {
			// The header is hashed: the SHA-256 appended after the image
			// covers it. Its end is where Parse found the image to end.
			img, err := espimage.Parse(part.Data)
			if err != nil || !img.HashAppended {
				return nil, fmt.Errorf("%s: cannot find its appended SHA-256 to update it: %v", part.Name, err)
			}
			end := img.ImageLen - 32
			sum := sha256.Sum256(b[:end])
			copy(b[end:], sum[:])
		}
		out[i] = NewPart(part.Offset, part.Name, b)
		return out, nil
	}
	return nil, fmt.Errorf("no image at the %s bootloader offset 0x%x to set the flash parameters in", chip.Name, chip.BootloaderOffset)
}

func sizeName(n int64) string {
	for _, s := range []string{"256KB", "512KB", "1MB", "2MB", "4MB", "8MB", "16MB", "32MB", "64MB", "128MB"} {
		v := int64(0)
		if strings.HasSuffix(s, "KB") {
			fmt.Sscanf(s, "%dKB", &v)
			v <<= 10
		} else {
			fmt.Sscanf(s, "%dMB", &v)
			v <<= 20
		}
		if v == n {
			return s
		}
	}
	return ""
}
