package romemu

import (
	"testing"

	"otabox/appliance/romloader"
)

// TestESP8266ROMErasesMore: the emulated ESP8266 ROM has its
// SPIEraseArea bug (esptool issue #33): asked for n sectors within a
// 64 KB block it erases 2n; across a boundary, n plus those up to it.
// A stub, and the ESP32 ROM, erase what is asked.
func TestESP8266ROMErasesMore(t *testing.T) {
	erased := func(chip string, stub bool, off, size uint32) int {
		c, _ := romloader.ChipNamed(chip)
		b := New(c, [6]byte{}, 1<<20)
		for i := range b.Flash {
			b.Flash[i] = 0
		}
		b.stub = stub
		b.erase(off, size)
		n := 0
		for _, x := range b.Flash {
			if x == 0xff {
				n++
			}
		}
		return n / 4096
	}
	for _, tc := range []struct {
		chip      string
		stub      bool
		off, size uint32
		want      int
	}{
		{"ESP8266", false, 0x1000, 4 * 4096, 8},
		{"ESP8266", false, 0xe000, 5 * 4096, 7},
		{"ESP8266", true, 0x1000, 4 * 4096, 4},
		{"ESP32", false, 0x1000, 4 * 4096, 4},
	} {
		if got := erased(tc.chip, tc.stub, tc.off, tc.size); got != tc.want {
			t.Errorf("%s stub=%v: %d sectors at 0x%x erased %d, want %d", tc.chip, tc.stub, tc.size/4096, tc.off, got, tc.want)
		}
	}
}
