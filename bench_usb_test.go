package main

// The factory bench over USB: `otabox flash`, as the README's factory
// section has a supervisor type it, against emulated boards on ser2net-
// style TCP ports (the emulator is proven against esptool-js in
// appliance/romloader/romemu).

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"otabox/appliance/emu"
	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
	"otabox/appliance/romloader"
	"otabox/appliance/romloader/romemu"
)

func serveBoard(t *testing.T, chip string, last byte) (*romemu.Board, string) {
	t.Helper()
	c, _ := romloader.ChipNamed(chip)
	b := romemu.New(c, [6]byte{0x24, 0x6f, 0x28, 0x55, 0x00, last}, 4<<20)
	spec, stop, err := b.ServeTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return b, spec
}

// TestFlashCommandFlashesATray: `otabox flash --port SLOT=PORT ...
// OFFSET=FILE ...` flashes every board at once and prints a row per slot
// (chip and MAC from the ROM, bytes, MD5 verified) and "N of M boards
// passed"; a board of another chip than the image fails its slot before a
// byte is written, the command exits 1, and --json gives the rows.
func TestFlashCommandFlashesATray(t *testing.T) {
	dir := t.TempDir()
	app, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP32, Size: 300 << 10, Project: "prod", Version: "2.1.0", Seed: 7})
	boot := bytes.Repeat([]byte{0x5a}, 24<<10)
	os.WriteFile(filepath.Join(dir, "app.bin"), app, 0o644)
	os.WriteFile(filepath.Join(dir, "bootloader.bin"), boot, 0o644)
	b1, p1 := serveBoard(t, "ESP32", 1)
	b2, p2 := serveBoard(t, "ESP32", 2)
	b3, p3 := serveBoard(t, "ESP32-C3", 3)
	data := t.TempDir()
	cmd := exec.Command(otabox, "flash", "--data-dir", data, "--port", "1="+p1, "--port", "2="+p2, "--port", "3="+p3,
		"0x1000="+filepath.Join(dir, "bootloader.bin"), "0x10000="+filepath.Join(dir, "app.bin"))
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v\n%s", err, out)
	}
	text := string(out)
	for _, want := range []string{"SLOT  CHIP", "1     ESP32     24:6F:28:55:00:01", "md5", "FAILED: app.bin is built for ESP32, the board is an ESP32-C3: nothing written", "2 of 3 boards passed"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	for _, b := range []*romemu.Board{b1, b2} {
		if !bytes.Equal(b.Read(0x10000, len(app)), app) || !bytes.Equal(b.Read(0x1000, len(boot)), boot) {
			t.Errorf("board %s does not hold the image", romloader.FormatMAC(b.MAC))
		}
	}
	if b3.Commands[0x02] != 0 {
		t.Error("the ESP32-C3 was written to")
	}
	out, _ = exec.Command(otabox, "flash", "--no-record", "--json", "--port", "7="+p1, "0x10000="+filepath.Join(dir, "app.bin")).Output()
	var rows []struct {
		Slot, Chip, MAC string
		Passed          bool
		Parts           []struct{ SHA256, MD5 string }
	}
	if err := json.Unmarshal(out, &rows); err != nil || len(rows) != 1 || !rows[0].Passed || rows[0].Slot != "7" || rows[0].Parts[0].MD5 != romloader.MD5(app) {
		t.Errorf("--json: %v %s", err, out)
	}
}

// TestUSBFlashedBoardsAreBatchRowsAndConfirmOverWiFi: `otabox flash
// --batch B` records each board in the open batch by its slot (result
// "flashed", with the written image's SHA-256; a board of the wrong chip
// "refused"), and as a fleet device sent the image: when it later checks
// in over Wi-Fi running it, the record and the batch say confirmed.
func TestUSBFlashedBoardsAreBatchRowsAndConfirmOverWiFi(t *testing.T) {
	dir, data := t.TempDir(), t.TempDir()
	app, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP32, Size: 200 << 10, Project: "prod", Version: "2.1.0", Seed: 8})
	os.WriteFile(filepath.Join(dir, "app.bin"), app, 0o644)
	if out, err := exec.Command(otabox, "batch", "start", "tray-u", "--image", "app.bin", "--expect", "3", "--catalog", dir, "--data-dir", data).CombinedOutput(); err != nil {
		t.Fatalf("batch start: %v\n%s", err, out)
	}
	b1, p1 := serveBoard(t, "ESP32", 0x11)
	_, p2 := serveBoard(t, "ESP32", 0x12)
	_, p3 := serveBoard(t, "ESP32-S3", 0x13)
	out, err := exec.Command(otabox, "flash", "--batch", "tray-u", "--data-dir", data, "--port", "1="+p1, "--port", "2="+p2, "--port", "3="+p3,
		"0x10000="+filepath.Join(dir, "app.bin")).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "recorded 3 boards") {
		t.Fatalf("flash: %v\n%s", err, out)
	}
	csvOut, err := exec.Command(otabox, "report", "tray-u", "--data-dir", data).Output()
	if err != nil {
		t.Fatal(err)
	}
	rows := strings.Split(strings.TrimSpace(string(csvOut)), "\n")
	byMAC := map[string]string{}
	for _, r := range rows[1:] {
		byMAC[strings.Split(r, ",")[1]] = r
	}
	sha := sha256hex(app)
	mac1 := romloader.FormatMAC(b1.MAC)
	if r := byMAC[mac1]; !strings.Contains(r, ",flashed,") || !strings.Contains(r, ",1,"+sha+",1640ef,") || !strings.Contains(r, ",ESP32,ESP32,3,4194304,") {
		t.Errorf("slot 1's row (family, chip, revision 3, 4 MB of flash, slot, SHA-256, flash id): %q", r)
	}
	if r := byMAC["24:6F:28:55:00:13"]; !strings.Contains(r, ",refused,") || !strings.Contains(r, "is built for ESP32, the board is an ESP32-S3") {
		t.Errorf("slot 3's row: %q", r)
	}

	r := startData(t, data, "--catalog", dir)
	d := emu.New(emu.ESP32v30)
	d.Running, d.STAMAC = app, mac1
	if res := d.Update(r.addr, "/update"); res.Status != 304 {
		t.Fatalf("check-in running the flashed image: %v %q", res, res.Headers["x-otabox-reason"])
	}
	if got := recorded(t, data)[mac1]; got.State != "confirmed" {
		t.Errorf("fleet record after the check-in: %+v", got)
	}
	csvOut, _ = exec.Command(otabox, "report", "tray-u", "--data-dir", data).Output()
	if !strings.Contains(string(csvOut), mac1) || !strings.Contains(strings.Split(string(csvOut), mac1)[1], ",confirmed,") {
		t.Errorf("the batch row after the check-in:\n%s", csvOut)
	}
}

func sha256hex(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// TestStationFollowsAUSBTray: while `otabox flash --batch` writes a tray,
// the running server's station page shows each board's tile by slot, with
// its MAC and bytes written over USB, then "flashed".
func TestStationFollowsAUSBTray(t *testing.T) {
	dir, data := t.TempDir(), t.TempDir()
	app, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP32, Size: 200 << 10, Project: "prod", Version: "2.2.0", Seed: 9})
	os.WriteFile(filepath.Join(dir, "app.bin"), app, 0o644)
	if out, err := exec.Command(otabox, "batch", "start", "tray-l", "--image", "app.bin", "--catalog", dir, "--data-dir", data).CombinedOutput(); err != nil {
		t.Fatalf("batch start: %v\n%s", err, out)
	}
	r := startData(t, data, "--catalog", dir)
	b1, p1 := serveBoard(t, "ESP32", 0x21)
	b2, p2 := serveBoard(t, "ESP32", 0x22)
	for _, b := range []*romemu.Board{b1, b2} {
		b.Baud = 115200 // paced as a UART: the write takes a few seconds at 460,800
	}
	cmd := exec.Command(otabox, "flash", "--batch", "tray-l", "--data-dir", data, "--port", "1="+p1, "--port", "2="+p2, "0x10000="+filepath.Join(dir, "app.bin"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sawLive := false
	for i := 0; i < 100 && !sawLive; i++ {
		page := getBody(t, "http://"+r.addr+"/station?batch=tray-l&fragment=1")
		sawLive = strings.Contains(page, `data-result="in-progress" data-slot="1"`) && strings.Contains(page, "over USB: ")
		time.Sleep(100 * time.Millisecond)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("flash: %v\n%s", err, out.String())
	}
	if !sawLive {
		t.Error("the station page never showed slot 1 being written over USB")
	}
	page := getBody(t, "http://"+r.addr+"/station?batch=tray-l&fragment=1")
	if strings.Count(page, `data-result="flashed"`) != 2 || !strings.Contains(page, `<div class="slot">2</div><div class="mac">24:6F:28:55:00:22</div>`) {
		t.Errorf("after the run:\n%.1500s", page)
	}
}
