package main

// The factory bench over USB: `otabox flash`, as the README's factory
// section has a supervisor type it, against emulated boards on ser2net-
// style TCP ports (the emulator is proven against esptool-js in
// appliance/romloader/romemu).

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
	"otabox/appliance/romloader"
	"otabox/appliance/romloader/romemu"
)

func serveBoard(t *testing.T, chip string, last byte) (*romemu.Board, string) {
	t.Helper()
	c, _ := romloader.ChipNamed(chip)
	b := romemu.New(c, [6]byte{0x24, 0x6f, 0x28, 0x55, 0x00, last}, 4<<20)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go b.Serve(conn)
		}
	}()
	return b, "socket://" + ln.Addr().String()
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
	cmd := exec.Command(otabox, "flash", "--port", "1="+p1, "--port", "2="+p2, "--port", "3="+p3,
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
	out, _ = exec.Command(otabox, "flash", "--json", "--port", "7="+p1, "0x10000="+filepath.Join(dir, "app.bin")).Output()
	var rows []struct {
		Slot, Chip, MAC string
		Passed          bool
		Parts           []struct{ SHA256, MD5 string }
	}
	if err := json.Unmarshal(out, &rows); err != nil || len(rows) != 1 || !rows[0].Passed || rows[0].Slot != "7" || rows[0].Parts[0].MD5 != romloader.MD5(app) {
		t.Errorf("--json: %v %s", err, out)
	}
}
