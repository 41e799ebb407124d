package tray_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
	"otabox/appliance/nvs"
	"otabox/appliance/romloader"
	"otabox/appliance/romloader/romemu"
	"otabox/appliance/tray"
)

// listen serves an emulated board on a loopback port, as ser2net would
// serve a real one, and returns its socket:// spec.
func listen(t *testing.T, b *romemu.Board) string {
	t.Helper()
	spec, stop, err := b.ServeTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return spec
}

func emulated(name string, n int) *romemu.Board {
	c, _ := romloader.ChipNamed(name)
	return romemu.New(c, [6]byte{0x24, 0x6f, 0x28, 0xaa, 0x00, byte(n)}, 4<<20)
}

// TestTrayOfEight: eight boards of mixed chips flashed at once, each
// image read back byte for byte; of three more, one unplugged mid-write
// is a failed slot with the reason, one whose blocks keep failing their
// checksum fails after three tries, one of another chip than the image
// is refused before the first write; the others finish all the same.
func TestTrayOfEight(t *testing.T) {
	app32, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP32, Size: 200 << 10, Project: "prod", Version: "2.0.0", Seed: 1})
	appS3, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP32, Chip: espimage.ChipESP32S3, Size: 200 << 10, Project: "prod", Version: "2.0.0", Seed: 2})
	app8266, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 200 << 10, Project: "prod", Version: "2.0.0", Seed: 3})
	boot := make([]byte, 20000)
	rand.Read(boot)
	parts := map[string][]tray.Part{
		"ESP32":    {tray.NewPart(0x1000, "bootloader.bin", boot), tray.NewPart(0x10000, "prod-esp32.bin", app32)},
		"ESP32-S3": {tray.NewPart(0x10000, "prod-s3.bin", appS3)},
		"ESP8266":  {tray.NewPart(0, "prod-8266.bin", app8266)},
	}
	chips := []string{"ESP32", "ESP32", "ESP32-S3", "ESP8266", "ESP32", "ESP32-S3", "ESP8266", "ESP32"}
	boards := map[string]*romemu.Board{}
	var slots []tray.Slot
	for i, c := range chips {
		b := emulated(c, i)
		name := string(rune('1' + i))
		boards[name] = b
		slots = append(slots, tray.Slot{Name: name, Port: listen(t, b)})
	}
	// Per chip, one run each, at once.
	rows := map[string]tray.Board{}
	done := make(chan []tray.Board)
	for chip, p := range parts {
		var mine []tray.Slot
		for i, s := range slots {
			if chips[i] == chip {
				mine = append(mine, s)
			}
		}
		go func() { done <- tray.Flash(context.Background(), mine, tray.Fixed(p), tray.Options{}) }()
	}
	for range parts {
		for _, r := range <-done {
			rows[r.Slot] = r
		}
	}
	for i, c := range chips {
		name := string(rune('1' + i))
		r := rows[name]
		if !r.Passed || r.Chip != c || r.MAC != romloader.FormatMAC(boards[name].MAC) {
			t.Errorf("slot %s: %+v", name, r)
			continue
		}
		for _, p := range parts[c] {
			if !bytes.Equal(boards[name].Read(int(p.Offset), len(p.Data)), p.Data) {
				t.Errorf("slot %s: %s at 0x%x does not read back", name, p.Name, p.Offset)
			}
		}
		if want := "md5"; c != "ESP8266" && r.Verified != want || c == "ESP8266" && !strings.HasPrefix(r.Verified, "written, not verified") {
			t.Errorf("slot %s (%s): verified %q", name, c, r.Verified)
		}
	}

	unplugged, corrupt, wrong, good := emulated("ESP32", 20), emulated("ESP32", 21), emulated("ESP32-S3", 22), emulated("ESP32", 23)
	unplugged.UnplugAfter = 50000
	corrupt.CorruptFrom, corrupt.BadChecksum = 5, 100
	faulty := []tray.Slot{{Name: "9", Port: listen(t, unplugged)}, {Name: "10", Port: listen(t, corrupt)}, {Name: "11", Port: listen(t, wrong)}, {Name: "12", Port: listen(t, good)}}
	got := tray.Flash(context.Background(), faulty, tray.Fixed(parts["ESP32"]), tray.Options{})
	for i, want := range []string{"port closed", "invalid CRC", "prod-esp32.bin is built for ESP32, the board is an ESP32-S3: nothing written", ""} {
		r := got[i]
		if want == "" {
			if !r.Passed {
				t.Errorf("slot %s beside the faulty ones: %+v", r.Slot, r)
			}
			continue
		}
		if r.Passed || !strings.Contains(r.Reason, want) {
			t.Errorf("slot %s: passed=%v reason %q, want %q", r.Slot, r.Passed, r.Reason, want)
		}
	}
	if n := wrong.Commands[0x02]; n != 0 {
		t.Errorf("the board of the wrong chip got %d FLASH_BEGIN", n)
	}
}

// TestSlotsFromPorts: "N=port" names the slot; a bare port without a USB
// path is numbered by its place; a slot named twice is refused, and so is
// a port of a scheme otabox does not speak.
func TestSlotsFromPorts(t *testing.T) {
	s, err := tray.ParseSlots([]string{"3=socket://127.0.0.1:1", "socket://127.0.0.1:2"})
	if err != nil || s[0].Name != "3" || s[0].Port != "socket://127.0.0.1:1" || s[1].Name != "2" {
		t.Fatalf("%+v %v", s, err)
	}
	if _, err := tray.ParseSlots([]string{"1=socket://a:1", "1=socket://b:2"}); err == nil {
		t.Fatal("a slot given twice was taken")
	}
	if _, err := tray.Open("ftp://127.0.0.1:4000"); err == nil || !strings.Contains(err.Error(), "unknown scheme") {
		t.Fatalf("ftp://: %v", err)
	}
}

// TestManifestGivesEachChipItsBuild: with an ESP Web Tools manifest, each
// board is written its own chip family's parts (files beside the
// manifest, at their offsets), so one run flashes a tray of mixed chips;
// a board whose chip has no build is refused before the first write.
func TestManifestGivesEachChipItsBuild(t *testing.T) {
	dir := t.TempDir()
	app32, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP32, Size: 100 << 10, Project: "node", Version: "1.0.0", Seed: 11})
	app8266, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 100 << 10, Project: "node", Version: "1.0.0", Seed: 12})
	boot := bytes.Repeat([]byte{0xb0}, 16<<10)
	os.MkdirAll(filepath.Join(dir, "esp32"), 0o755)
	os.WriteFile(filepath.Join(dir, "esp32", "bootloader.bin"), boot, 0o644)
	os.WriteFile(filepath.Join(dir, "esp32", "node.bin"), app32, 0o644)
	os.WriteFile(filepath.Join(dir, "node-8266.bin"), app8266, 0o644)
	manifest := filepath.Join(dir, "manifest.json")
	os.WriteFile(manifest, []byte(`{"name":"node","version":"1.0.0","builds":[
		{"chipFamily":"ESP32","parts":[{"path":"esp32/bootloader.bin","offset":4096},{"path":"esp32/node.bin","offset":65536}]},
		{"chipFamily":"ESP8266","parts":[{"path":"node-8266.bin","offset":0}]}]}`), 0o644)
	plan, err := tray.ManifestPlan(manifest)
	if err != nil {
		t.Fatal(err)
	}
	b32, b8266, c3 := emulated("ESP32", 1), emulated("ESP8266", 2), emulated("ESP32-C3", 3)
	rows := tray.Flash(context.Background(), []tray.Slot{{Name: "1", Port: listen(t, b32)}, {Name: "2", Port: listen(t, b8266)}, {Name: "3", Port: listen(t, c3)}}, plan, tray.Options{})
	if !rows[0].Passed || !bytes.Equal(b32.Read(0x1000, len(boot)), boot) || !bytes.Equal(b32.Read(0x10000, len(app32)), app32) {
		t.Errorf("ESP32: %+v", rows[0])
	}
	if !rows[1].Passed || !bytes.Equal(b8266.Read(0, len(app8266)), app8266) {
		t.Errorf("ESP8266: %+v", rows[1])
	}
	if rows[2].Passed || !rows[2].Refused || rows[2].Reason != "the manifest has no build for ESP32-C3 (it has ESP32, ESP8266): nothing written" || c3.Commands[0x02] != 0 {
		t.Errorf("ESP32-C3: %+v", rows[2])
	}
	os.WriteFile(manifest, []byte(`{"builds":[{"chipFamily":"ESP32","parts":[{"path":"https://example.com/x.bin","offset":0}]}]}`), 0o644)
	if _, err := tray.ManifestPlan(manifest); err == nil || !strings.Contains(err.Error(), "is a URL") {
		t.Errorf("a part given by URL: %v", err)
	}
	os.WriteFile(manifest, []byte(`{"builds":[{"chipFamily":"ESP32","parts":[{"path":"../../etc/passwd","offset":0}]}]}`), 0o644)
	if _, err := tray.ManifestPlan(manifest); err == nil || !strings.Contains(err.Error(), "outside the manifest's folder") {
		t.Errorf("a part outside the manifest's folder: %v", err)
	}
}

// TestFlashParamsSetInTheBootloaderHeader: --flash-mode / --flash-size /
// --flash-freq set the header of the image at the chip's bootloader
// offset as the ROM reads it (byte 2 the mode; byte 3 the size and
// frequency nibbles, with the ESP8266's own size codes), "detect" takes the
// size from the flash chip's JEDEC id, and an ESP32 image's appended
// SHA-256 is computed again, so the written bootloader still verifies. A
// part that ends past the board's flash is refused before the first write.
func TestFlashParamsSetInTheBootloaderHeader(t *testing.T) {
	boot32, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP32, Size: 24 << 10, FlashMode: 0, FlashSize: 2 << 20, Seed: 21})
	app8266, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 64 << 10, FlashMode: 0, FlashSize: 1 << 20, Seed: 22})
	b32, b8266 := emulated("ESP32", 1), emulated("ESP8266", 2)
	params := tray.FlashParams{Mode: "dio", Size: "detect", Freq: "80m"}
	if err := params.Check(); err != nil {
		t.Fatal(err)
	}
	r32 := tray.Flash(context.Background(), []tray.Slot{{Name: "1", Port: listen(t, b32)}}, tray.Fixed([]tray.Part{tray.NewPart(0x1000, "bootloader.bin", boot32)}), tray.Options{Flash: params})
	r8266 := tray.Flash(context.Background(), []tray.Slot{{Name: "2", Port: listen(t, b8266)}}, tray.Fixed([]tray.Part{tray.NewPart(0, "app.bin", app8266)}), tray.Options{Flash: params})
	for _, tc := range []struct {
		row     tray.Board
		b       *romemu.Board
		at, n   int
		byte3   byte
		flashed int64
	}{{r32[0], b32, 0x1000, len(boot32), 0x2f, 4 << 20}, {r8266[0], b8266, 0, len(app8266), 0x4f, 4 << 20}} {
		got := tc.b.Read(tc.at, tc.n)
		if !tc.row.Passed || got[2] != 2 || got[3] != tc.byte3 || tc.row.FlashSize != tc.flashed || tc.row.FlashID != "1640ef" {
			t.Errorf("%s: %+v, header bytes %02x %02x", tc.row.Chip, tc.row, got[2], got[3])
		}
		img, err := espimage.Parse(got)
		if err != nil || img.FlashMode != 2 || img.FlashSize != 4<<20 || img.FlashFreq != "80MHz" {
			t.Errorf("%s: the written image parses as %+v, %v", tc.row.Chip, img, err)
		}
		if tc.row.Parts[0].SHA256 != tray.NewPart(0, "", got).SHA256 {
			t.Errorf("%s: the row's SHA-256 is not that of what was written", tc.row.Chip)
		}
	}
	if err := (tray.FlashParams{Mode: "fast"}).Check(); err == nil {
		t.Error("flash mode fast was taken")
	}
	big := make([]byte, 5<<20)
	big[0] = 0x00
	r := tray.Flash(context.Background(), []tray.Slot{{Name: "3", Port: listen(t, emulated("ESP32", 3))}}, tray.Fixed([]tray.Part{tray.NewPart(0, "huge.bin", big)}), tray.Options{})
	if r[0].Passed || !strings.Contains(r[0].Reason, "ends past the board's 4 MB of flash") {
		t.Errorf("a part past the end of flash: %+v", r[0])
	}
}

// TestBoardDataPartition: with board data, each board gets its own NVS
// partition at the given offset, its values expanded for it ({mac12},
// {slot}, {batch}), byte for byte what nvs.Build makes of them (whose
// format is checked against ESP-IDF's generator); board data overlapping
// another part is refused before the first write.
func TestBoardDataPartition(t *testing.T) {
	app, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP32, Size: 64 << 10, Seed: 31})
	bd, err := tray.ParseBoardData("0x3f0000:0x3000", []string{"serial=ACME-{mac12}", "slot={slot}", "batch={batch}"})
	if err != nil {
		t.Fatal(err)
	}
	a, b := emulated("ESP32", 0x41), emulated("ESP32", 0x42)
	rows := tray.Flash(context.Background(), []tray.Slot{{Name: "1", Port: listen(t, a)}, {Name: "2", Port: listen(t, b)}},
		tray.Fixed([]tray.Part{tray.NewPart(0x10000, "app.bin", app)}), tray.Options{BoardData: bd, Batch: "tray-9"})
	for i, board := range []*romemu.Board{a, b} {
		mac := romloader.FormatMAC(board.MAC)
		want, _ := nvs.Build(0x3000, tray.Namespace, []nvs.Value{
			{Key: "serial", Str: "ACME-" + strings.ReplaceAll(mac, ":", "")}, {Key: "slot", Str: rows[i].Slot}, {Key: "batch", Str: "tray-9"}})
		if !rows[i].Passed || !bytes.Equal(board.Read(0x3f0000, 0x3000), want) {
			t.Errorf("slot %s: %+v; its partition holds %q", rows[i].Slot, rows[i], board.Read(0x3f0000+64, 96))
		}
	}
	over, _ := tray.ParseBoardData("0x10000:0x3000", []string{"serial={mac12}"})
	r := tray.Flash(context.Background(), []tray.Slot{{Name: "3", Port: listen(t, emulated("ESP32", 0x43))}}, tray.Fixed([]tray.Part{tray.NewPart(0x10000, "app.bin", app)}), tray.Options{BoardData: over})
	if r[0].Passed || !strings.Contains(r[0].Reason, "overlaps app.bin") {
		t.Errorf("overlapping board data: %+v", r[0])
	}
	if _, err := tray.ParseBoardData("0x3f0800:0x3000", nil); err == nil {
		t.Error("board data off a 4 KB boundary was taken")
	}
}
