package fsimage

import (
	"strings"
	"testing"
)

// TestLittleFSByItsSuperblock: images of the sizes the cores format (an
// ESP8266 4M2M area of 8 KB blocks, an ESP32 default spiffs partition of
// 4 KB blocks) are recognised from block 0, and from block 1 when block 0
// is damaged; anything else is not a LittleFS image, with the reason.
func TestLittleFSByItsSuperblock(t *testing.T) {
	for _, tc := range []struct {
		name       string
		bs, blocks uint32
	}{{"ESP8266 4M2M", 8192, 253}, {"ESP32 default spiffs", 4096, 352}} {
		t.Run(tc.name, func(t *testing.T) {
			img := Build(tc.bs, tc.blocks)
			if int64(len(img)) != int64(tc.bs)*int64(tc.blocks) {
				t.Fatalf("built %d bytes", len(img))
			}
			for _, damage := range []bool{false, true} {
				b := append([]byte(nil), img...)
				if damage {
					copy(b[8:], "xxxxxxxx")
				}
				im, err := Parse(b[:min(len(b), HeadLen)], int64(len(b)))
				if err != nil || im.Kind != LittleFS || im.BlockSize != tc.bs || im.BlockCount != tc.blocks || im.Version != 0x00020000 {
					t.Fatalf("block 0 damaged %v: %+v %v", damage, im, err)
				}
			}
			if _, err := Parse(img[:HeadLen], int64(len(img))-4096); err == nil || !strings.Contains(err.Error(), "the file has") {
				t.Errorf("a truncated image: %v", err)
			}
		})
	}
	for name, b := range map[string][]byte{
		"empty":      nil,
		"zeros":      make([]byte, 8192),
		"an ESP app": append([]byte{0xE9, 3, 2, 0x20}, make([]byte, 4096)...),
	} {
		if im, err := Parse(b, int64(len(b))); err == nil {
			t.Errorf("%s: recognised as %+v", name, im)
		}
	}
	v3 := Build(4096, 16)
	v3[20], v3[21], v3[22], v3[23] = 0, 0, 3, 0
	v3[4096+20], v3[4096+21], v3[4096+22], v3[4096+23] = 0, 0, 3, 0
	if _, err := Parse(v3[:HeadLen], int64(len(v3))); err == nil || !strings.Contains(err.Error(), "version 3.0") {
		t.Errorf("LittleFS 3.0: %v", err)
	}
}

func TestSPIFFSByName(t *testing.T) {
	for name, want := range map[string]bool{
		"spiffs.bin": true, "data.spiffs.bin": true, "lab/site.SPIFFS": true,
		"firmware.bin": false, "spiffs.txt": false, "littlefs.bin": false,
	} {
		if SPIFFSName(name) != want {
			t.Errorf("SPIFFSName(%q) = %v", name, !want)
		}
	}
}

// FuzzParse: any bytes and size; never a panic, and whatever is
// recognised is a whole area of a power-of-two block size.
func FuzzParse(f *testing.F) {
	f.Add(Build(4096, 4), int64(16384))
	f.Add(Build(128, 2), int64(256))
	f.Add([]byte("littlefs"), int64(8))
	f.Fuzz(func(t *testing.T, head []byte, size int64) {
		if len(head) > HeadLen {
			head = head[:HeadLen]
		}
		im, err := Parse(head, size)
		if err != nil {
			return
		}
		if im.BlockSize&(im.BlockSize-1) != 0 || int64(im.BlockSize)*int64(im.BlockCount) != size {
			t.Fatalf("recognised %+v for %d bytes", im, size)
		}
	})
}
