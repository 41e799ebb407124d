package bench

import (
	"bytes"
	stdgzip "compress/gzip"
	"os"
	"os/exec"
	"testing"
	"time"

	kgzip "github.com/klauspost/compress/gzip"

	"otabox/appliance/deflate"
	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
)

// TestGzipEncoders prints, side by side, the bytes each encoder sends for
// the sample ESP8266 images and a 1 MB build, and the time it takes: the
// standard library and klauspost at their best level, GNU gzip -9 (when
// installed; measured only), and otabox's deflate package.
func TestGzipEncoders(t *testing.T) {
	big, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 1 << 20, Seed: 1})
	blink, _ := os.ReadFile("../firmware/blink-esp8266.bin")
	sensor, _ := os.ReadFile("../firmware/lab/sensor-esp8266-1m.bin")
	encoders := []struct {
		name string
		enc  func([]byte) []byte
	}{
		{"compress/gzip -9", func(b []byte) []byte {
			var buf bytes.Buffer
			zw, _ := stdgzip.NewWriterLevel(&buf, 9)
			zw.Write(b)
			zw.Close()
			return buf.Bytes()
		}},
		{"klauspost -9", func(b []byte) []byte {
			var buf bytes.Buffer
			zw, _ := kgzip.NewWriterLevel(&buf, 9)
			zw.Write(b)
			zw.Close()
			return buf.Bytes()
		}},
		{"GNU gzip -9", func(b []byte) []byte {
			cmd := exec.Command("gzip", "-9", "-n", "-c")
			cmd.Stdin = bytes.NewReader(b)
			out, err := cmd.Output()
			if err != nil {
				return nil
			}
			return out
		}},
		{"otabox deflate, lazy only", func(b []byte) []byte { return deflate.Gzip(b, deflate.Options{Rounds: -1}) }},
		{"otabox deflate (default)", func(b []byte) []byte { return deflate.Gzip(b, deflate.Options{}) }},
	}
	for _, img := range []struct {
		name string
		b    []byte
	}{{"blink-esp8266.bin", blink}, {"lab/sensor-esp8266-1m.bin", sensor}, {"1 MB build", big}} {
		for _, e := range encoders {
			start := time.Now()
			out := e.enc(img.b)
			if out == nil {
				t.Logf("%-26s %-26s not installed", img.name, e.name)
				continue
			}
			t.Logf("%-26s %-26s %9d -> %9d bytes (%5.1f %%) in %v", img.name, e.name, len(img.b), len(out), 100*float64(len(out))/float64(len(img.b)), time.Since(start).Round(time.Millisecond))
		}
	}
}
