package romemu_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"otabox/appliance/romloader"
	"otabox/appliance/romloader/romemu"
)

// skipOrFail skips a test this machine cannot run, visibly; under CI
// (CI=true), where .ci/run installs Node, it fails instead.
func skipOrFail(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("cannot run under CI: %s", why)
	}
	t.Skip(why)
}

// esptoolJS is where `make esptooljs` installs Espressif's esptool-js.
const esptoolJS = "testdata/esptooljs"

// TestEsptoolJSDrivesTheEmulator proves the emulator against a host
// implementation no one at otabox wrote: Espressif's esptool-js (npm,
// Apache-2.0), from Node, over TCP, detects each chip, reads its MAC,
// uploads its flasher stub, writes an image compressed and has the chip
// check its MD5; the emulated flash then holds the image byte for byte.
func TestEsptoolJSDrivesTheEmulator(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		skipOrFail(t, "node is not installed (apt-get install -y nodejs npm; .ci/run does): esptool-js cannot cross-check the emulator")
	}
	if _, err := os.Stat(filepath.Join(esptoolJS, "node_modules", "esptool-js", "package.json")); err != nil {
		skipOrFail(t, "esptool-js is not installed: run `make esptooljs` (make test does when npm is there)")
	}
	for i, name := range []string{"ESP8266", "ESP32", "ESP32-S3", "ESP32-C3"} {
		t.Run(name, func(t *testing.T) {
			chip, _ := romloader.ChipNamed(name)
			mac := [6]byte{0x24, 0x6f, 0x28, 0x10, 0x20, byte(0x30 + i)}
			board := romemu.New(chip, mac, 4<<20)
			spec, stop, err := board.ServeTCP() // a reopened port is the same board
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			img := make([]byte, 150000+1000*i)
			rand.Read(img[:len(img)/2]) // half random, half compressible
			file := filepath.Join(t.TempDir(), "image.bin")
			os.WriteFile(file, img, 0o644)
			const at = 0x10000
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			host, port, _ := net.SplitHostPort(strings.TrimPrefix(spec, "socket://"))
			cmd := exec.CommandContext(ctx, node, "check.mjs", host, port, file, strconv.Itoa(at))
			cmd.Dir = esptoolJS
			out, err := cmd.Output()
			var got struct {
				Chip, Description, MAC, Error string
				Stub                          bool
				Log                           []string
			}
			json.Unmarshal(out, &got)
			if err != nil || got.Error != "" {
				t.Fatalf("esptool-js: %v %s\n%s", err, got.Error, out)
			}
			if got.Chip != name || !bytes.EqualFold([]byte(got.MAC), []byte(romloader.FormatMAC(mac))) || !got.Stub {
				t.Errorf("esptool-js saw chip %q, MAC %q, stub %v; the board is %s %s", got.Chip, got.MAC, got.Stub, name, romloader.FormatMAC(mac))
			}
			if want := map[string]string{"ESP32": "(revision 3)", "ESP32-S3": "(revision v0.2)", "ESP32-C3": "(revision v0.4)"}[name]; want != "" && !strings.Contains(got.Description, want) {
				t.Errorf("esptool-js says the %s is %q, the emulator is %s", name, got.Description, want)
			}
			if !bytes.Equal(board.Read(at, len(img)), img) {
				t.Errorf("the emulated flash does not hold what esptool-js wrote")
			}
		})
	}
}
