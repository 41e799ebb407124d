// Command mksamples writes otabox's sample firmware: small, structurally
// valid ESP8266 and ESP32 images that a fresh clone serves with `make run`.
// The output is deterministic, so regenerating leaves git clean.
//
//	go run ./tools/mksamples -out firmware
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
)

// samples is the set a fresh clone serves: one image per family at the
// root, and a sub-folder with a second project for other boards.
var samples = []struct {
	path string
	spec imagegen.Spec
}{
	{"blink-esp8266.bin", imagegen.Spec{Family: espimage.ESP8266, Size: 280 << 10, Project: "blink", Version: "1.0.0", Seed: 1}},
	{"blink-esp32.bin", imagegen.Spec{Family: espimage.ESP32, Chip: espimage.ChipESP32, Size: 240 << 10, Project: "blink", Version: "1.0.0", Date: "Nov 20 2026", Time: "10:15:00", Seed: 2}},
	{"lab/sensor-esp8266-1m.bin", imagegen.Spec{Family: espimage.ESP8266, Size: 200 << 10, FlashSize: 1 << 20, Project: "sensor", Version: "2.1.0", Seed: 3}},
	{"lab/sensor-esp32s3.bin", imagegen.Spec{Family: espimage.ESP32, Chip: espimage.ChipESP32S3, Size: 220 << 10, FlashSize: 8 << 20, Project: "sensor", Version: "2.1.0", Date: "Nov 24 2026", Time: "16:42:07", Seed: 4}},
}

func main() {
	out := flag.String("out", "firmware", "folder to write the samples into")
	flag.Parse()
	if err := write(*out); err != nil {
		fmt.Fprintln(os.Stderr, "mksamples:", err)
		os.Exit(1)
	}
}

// write builds every sample into dir.
func write(dir string) error {
	for _, s := range samples {
		b, err := imagegen.Build(s.spec)
		if err == nil {
			_, err = espimage.Parse(b) // never ship a sample the server would skip
		}
		if err != nil {
			return fmt.Errorf("%s: %w", s.path, err)
		}
		dst := filepath.Join(dir, filepath.FromSlash(s.path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			return err
		}
		fmt.Printf("%s\t%d bytes\n", dst, len(b))
	}
	return nil
}
