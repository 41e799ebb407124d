package espimage_test

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func build(t testing.TB, s imagegen.Spec) []byte {
	t.Helper()
	b, err := imagegen.Build(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseValid(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec imagegen.Spec
	}{
		{"esp8266-4M", imagegen.Spec{Family: espimage.ESP8266, Project: "p", Version: "1.2.3"}},
		{"esp8266-1M-qio", imagegen.Spec{Family: espimage.ESP8266, FlashSize: 1 << 20, FlashMode: 0}},
		{"esp8266-16M", imagegen.Spec{Family: espimage.ESP8266, FlashSize: 16 << 20}},
		{"esp32", imagegen.Spec{Family: espimage.ESP32, Project: "p", Version: "v2.0.0-rc1", Date: "Nov  6 2026", Time: "01:02:03"}},
		{"esp32-nohash", imagegen.Spec{Family: espimage.ESP32, NoHash: true}},
		{"esp32s2", imagegen.Spec{Family: espimage.ESP32, Chip: espimage.ChipESP32S2}},
		{"esp32s3", imagegen.Spec{Family: espimage.ESP32, Chip: espimage.ChipESP32S3, FlashSize: 16 << 20}},
		{"esp32c2", imagegen.Spec{Family: espimage.ESP32, Chip: espimage.ChipESP32C2}},
		{"esp32c3", imagegen.Spec{Family: espimage.ESP32, Chip: espimage.ChipESP32C3}},
		{"esp32c5", imagegen.Spec{Family: espimage.ESP32, Chip: espimage.ChipESP32C5}},
		{"esp32c6", imagegen.Spec{Family: espimage.ESP32, Chip: espimage.ChipESP32C6}},
		{"esp32h2", imagegen.Spec{Family: espimage.ESP32, Chip: espimage.ChipESP32H2}},
		{"esp32p4", imagegen.Spec{Family: espimage.ESP32, Chip: espimage.ChipESP32P4, FlashSize: 32 << 20}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := build(t, tc.spec)
			img, err := espimage.Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			wantChip := tc.spec.Chip
			if tc.spec.Family == espimage.ESP8266 {
				wantChip = espimage.ChipESP8266
			}
			if img.Family != tc.spec.Family || img.Chip != wantChip || img.ImageLen != len(b) || img.Trailing != 0 {
				t.Errorf("family %v chip %v len %d/%d", img.Family, img.Chip, img.ImageLen, len(b))
			}
			if fs := tc.spec.FlashSize; fs != 0 && img.FlashSize != fs {
				t.Errorf("flash %d, want %d", img.FlashSize, fs)
			}
			if img.Project != tc.spec.Project || img.Version != tc.spec.Version {
				t.Errorf("project %q version %q", img.Project, img.Version)
			}
			if tc.spec.Date != "" && (img.Date != "11/06/26" || img.Time != "01:02:03") {
				t.Errorf("stamp %q %q", img.Date, img.Time)
			}
			wantMD5s := 4
			if img.Family == espimage.ESP32 {
				wantMD5s = 1
			}
			if len(img.Digests.RunningMD5) != wantMD5s {
				t.Errorf("%d running MD5s", len(img.Digests.RunningMD5))
			}
		})
	}
}

func TestESP8266RunningDigests(t *testing.T) {
	b := build(t, imagegen.Spec{Family: espimage.ESP8266, FlashMode: 2})
	img, err := espimage.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	// The DIO entry is the file itself; the QIO entry is the file with
	// byte 2 rewritten, as the Updater leaves it in flash.
	if img.Digests.RunningMD5[2] != img.Digests.FileMD5 {
		t.Error("DIO digest differs from the file's")
	}
	qio := bytes.Clone(b)
	qio[2] = 0
	if sum := md5.Sum(qio); hex.EncodeToString(sum[:]) != img.Digests.RunningMD5[0] {
		t.Error("QIO digest is not the MD5 of the rewritten header")
	}
}

func TestESP32RunningSHA(t *testing.T) {
	b := build(t, imagegen.Spec{Family: espimage.ESP32})
	img, _ := espimage.Parse(b)
	want := sha256.Sum256(b[:len(b)-32])
	if img.Digests.RunningSHA256 != hex.EncodeToString(want[:]) {
		t.Errorf("running sha %s", img.Digests.RunningSHA256)
	}
	if !bytes.Equal(want[:], b[len(b)-32:]) {
		t.Error("appended digest is not the SHA-256 of the image")
	}
}

func TestGzip(t *testing.T) {
	raw := build(t, imagegen.Spec{Family: espimage.ESP8266, Project: "gz", Version: "3"})
	gz := imagegen.Gzip(raw)
	img, err := espimage.Parse(gz)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := espimage.Parse(raw)
	if !img.Compressed || img.FileSize != len(gz) || img.Project != "gz" {
		t.Errorf("%+v", img)
	}
	if img.Digests.FileMD5 == plain.Digests.FileMD5 || strings.Join(img.Digests.RunningMD5, ",") != strings.Join(plain.Digests.RunningMD5, ",") {
		t.Error("gzip digests: file MD5 must be of the compressed bytes, running MD5s of the inflated image")
	}
	if _, err := espimage.Parse(imagegen.Gzip(build(t, imagegen.Spec{Family: espimage.ESP32}))); err == nil || !strings.Contains(err.Error(), "only ESP8266") {
		t.Errorf("gzip ESP32: %v", err)
	}
}

// TestMalformed: every corruption gives a FormatError at the right byte.
func TestMalformed(t *testing.T) {
	e8266 := build(t, imagegen.Spec{Family: espimage.ESP8266})
	e32 := build(t, imagegen.Spec{Family: espimage.ESP32})
	e32nohash := build(t, imagegen.Spec{Family: espimage.ESP32, NoHash: true})
	good, _ := espimage.Parse(e8266)
	mod := func(b []byte, f func([]byte) []byte) []byte { return f(bytes.Clone(b)) }
	set := func(b []byte, off int, v byte) []byte { return mod(b, func(c []byte) []byte { c[off] = v; return c }) }
	for _, tc := range []struct {
		name   string
		in     []byte
		offset int
		msg    string
	}{
		{"empty", nil, 0, "needs 8"},
		{"short", []byte{0xE9, 1, 2}, 3, "needs 8"},
		{"magic", set(e32, 0, 0xEA), 0, `not an ESP firmware image (starts with "\xea\x04"`},
		{"zero segments", set(e32, 1, 0), 1, "segment count"},
		{"17 segments", set(e32, 1, 17), 1, "segment count"},
		{"spi mode", set(e32, 2, 9), 2, "SPI flash mode"},
		{"esp8266 spi mode", mod(e8266, func(c []byte) []byte {
			c[2] = 4
			binary.LittleEndian.PutUint32(c[0x1014:], espimage.CRC8266(c))
			return c
		}), 2, "SPI flash mode"},
		{"esp32 flash nibble", mod(e32nohash, func(c []byte) []byte { c[3] = 0x9F; return c }), 3, "flash size nibble"},
		{"hash flag", mod(e32, func(c []byte) []byte { c[23] = 2; return c }), 0, ""},
		{"segment overruns", mod(e32, func(c []byte) []byte { binary.LittleEndian.PutUint32(c[28:], 1<<30); return c }), 28, "claims"},
		{"segment not aligned", mod(e32, func(c []byte) []byte { binary.LittleEndian.PutUint32(c[28:], 255); return c }), 28, "multiple of 4"},
		{"esp32 checksum", mod(e32nohash, func(c []byte) []byte { c[40] ^= 0xFF; return c }), len(e32nohash) - 1, "checksum"},
		{"esp32 sha", mod(e32, func(c []byte) []byte { c[len(c)-1] ^= 1; return c }), len(e32) - 32, "SHA-256"},
		{"esp32 sha truncated", e32[:len(e32)-5], len(e32) - 5, "SHA-256"},
		{"truncated segments", e32[:100], 0, ""},
		{"esp8266 crc", set(e8266, 0x2000, e8266[0x2000]^1), 0x1014, "CRC"},
		{"esp8266 app magic", mod(e8266, func(c []byte) []byte {
			c[0x1000] = 0
			binary.LittleEndian.PutUint32(c[0x1014:], espimage.CRC8266(c))
			return c
		}), 0x1000, "magic"},
		{"esp8266 boot checksum", mod(e8266, func(c []byte) []byte {
			c[20] ^= 1
			binary.LittleEndian.PutUint32(c[0x1014:], espimage.CRC8266(c))
			return c
		}), good.Boot.End - 1, "checksum"},
		{"esp8266 flash nibble", mod(e8266, func(c []byte) []byte {
			c[3] = 0x70
			binary.LittleEndian.PutUint32(c[0x1014:], espimage.CRC8266(c))
			return c
		}), 3, "flash size nibble"},
		{"gzip garbage", []byte{0x1F, 0x8B, 0, 0, 0}, 0, "gzip"},
		{"gzip of text", imagegen.Gzip([]byte("hello world, not firmware")), 0, "inflated image"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, err := espimage.Parse(tc.in)
			if err == nil {
				t.Fatalf("parsed: %+v", img)
			}
			var fe *espimage.FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("%T %v is not a FormatError", err, err)
			}
			if tc.msg != "" && (!strings.Contains(err.Error(), tc.msg) || fe.Offset != tc.offset) {
				t.Errorf("got %v (offset 0x%x), want offset 0x%x and %q", err, fe.Offset, tc.offset, tc.msg)
			}
		})
	}
}

// TestGolden pins what the parser sees in each shipped sample image.
func TestGolden(t *testing.T) {
	samples, _ := filepath.Glob("../../firmware/*.bin")
	more, _ := filepath.Glob("../../firmware/*/*.bin")
	samples = append(samples, more...)
	if len(samples) < 4 {
		t.Fatalf("found %d sample images", len(samples))
	}
	for _, path := range samples {
		name := strings.ReplaceAll(strings.TrimPrefix(path, "../../firmware/"), "/", "_")
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			img, err := espimage.Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			j, _ := json.MarshalIndent(img, "", "  ")
			out.Write(j)
			out.WriteString("\n\n")
			espimage.Describe(&out, img)
			golden := filepath.Join("testdata", name+".golden")
			if *update {
				os.WriteFile(golden, out.Bytes(), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("description changed; diff against %s (go test -update to accept):\n%s", golden, out.Bytes())
			}
		})
	}
}

// FuzzParse: any input parses or fails with a FormatError; never a panic,
// and a parsed image's numbers are consistent with the input.
func FuzzParse(f *testing.F) {
	for _, s := range []imagegen.Spec{
		{Family: espimage.ESP8266, Size: 8 << 10},
		{Family: espimage.ESP32, Size: 4 << 10, Project: "x", Version: "1"},
		{Family: espimage.ESP32, Size: 4 << 10, NoHash: true, Chip: espimage.ChipESP32C3},
	} {
		b, _ := imagegen.Build(s)
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	b, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 6 << 10})
	f.Add(imagegen.Gzip(b))
	f.Add([]byte{0xE9, 1, 0, 0x20, 0, 0, 0, 0})
	for _, s := range []imagegen.Spec{
		{Family: espimage.ESP8266, Size: 4 << 10, FlashMode: 3},
		{Family: espimage.ESP8266, Size: 4 << 10, FlashMode: 1},
	} {
		b, _ := imagegen.Build(s)
		f.Add(b)
		f.Add(append(b, 0xFF, 0xFF, 0xFF, 0xFF)) // trailing bytes: the file is not the running image
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		img, err := espimage.Parse(in)
		if err != nil {
			var fe *espimage.FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("%T: %v", err, err)
			}
			return
		}
		if img.FileSize != len(in) || (!img.Compressed && img.ImageLen+img.Trailing != len(in)) || img.ImageLen <= 0 {
			t.Fatalf("sizes: file %d image %d trailing %d input %d", img.FileSize, img.ImageLen, img.Trailing, len(in))
		}
		// The file's digests are of the bytes as stored, however Parse
		// came by them (it reuses a running digest when it is the same).
		m, h := md5.Sum(in), sha256.Sum256(in)
		if img.Digests.FileMD5 != hex.EncodeToString(m[:]) || img.Digests.FileSHA256 != hex.EncodeToString(h[:]) {
			t.Fatalf("file digests %s %s, the bytes give %x %x", img.Digests.FileMD5, img.Digests.FileSHA256, m, h)
		}
		espimage.Describe(new(bytes.Buffer), img)
	})
}

// TestCRC8266IsMPEG2WithItsWordsZeroed: elf2bin's CRC is CRC-32/MPEG-2
// (its check value on "123456789" is 0x0376e6e7) over the file with the
// size and CRC words counted as zero, at every length, whichever way it
// is computed: here against a bit-at-a-time reference.
func TestCRC8266IsMPEG2WithItsWordsZeroed(t *testing.T) {
	ref := func(b []byte) uint32 {
		crc := uint32(0xFFFFFFFF)
		for i, v := range b {
			if i >= 0x1010 && i < 0x1018 {
				v = 0
			}
			crc ^= uint32(v) << 24
			for k := 0; k < 8; k++ {
				if crc&0x80000000 != 0 {
					crc = crc<<1 ^ 0x04C11DB7
				} else {
					crc <<= 1
				}
			}
		}
		return crc
	}
	if got := espimage.CRC8266([]byte("123456789")); got != 0x0376E6E7 {
		t.Fatalf("check value 0x%08x, want 0x0376e6e7", got)
	}
	b := make([]byte, 0x1020)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	for _, n := range []int{0, 1, 7, 8, 9, 0x100f, 0x1010, 0x1011, 0x1014, 0x1017, 0x1018, 0x1019, 0x1020} {
		if got, want := espimage.CRC8266(b[:n]), ref(b[:n]); got != want {
			t.Errorf("%d bytes: 0x%08x, want 0x%08x", n, got, want)
		}
	}
}
