package bench

import (
	"bytes"
	stdgzip "compress/gzip"
	"os"
	"os/exec"
	"strings"
	"testing"

	kgzip "github.com/klauspost/compress/gzip"

	"otabox/appliance/deflate"
	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
)

// BenchmarkGzipEncoders measures, side by side, the bytes each encoder
// sends for the sample ESP8266 images and a 1 MB build (the "bytes"
// metric) and the time it takes: the standard library and klauspost at
// their best level, GNU gzip -9 (when installed) and otabox's deflate
// package.
//
//	go test -run '^$' -bench GzipEncoders -benchtime 3x ./bench/
func BenchmarkGzipEncoders(b *testing.B) {
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
	}{{"blink-esp8266", blink}, {"sensor-esp8266-1m", sensor}, {"1MB-build", big}} {
		for _, e := range encoders {
			b.Run(img.name+"/"+strings.ReplaceAll(e.name, " ", "_"), func(b *testing.B) {
				var out []byte
				for b.Loop() {
					out = e.enc(img.b)
				}
				if out == nil {
					b.Skip("not installed")
				}
				b.ReportMetric(float64(len(out)), "bytes")
				b.ReportMetric(100*float64(len(out))/float64(len(img.b)), "%")
			})
		}
	}
}
