package decide_test

import (
	"testing"

	"otabox/appliance/decide"
)

func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"1.0.0", "1.0.0", 0},
		{"1.10.0", "1.9.2", 1},
		{"v2.0", "1.99", 1},
		{"1.9", "1.9.1", -1},
		{"1.9.0-rc1", "1.9.0", -1},
		{"1.9.0-rc2", "1.9.0-rc10", -1},
		{"1.2.3", "1.2.beta", 1},
		{"", "0.1", -1},
		{"2026.11.26", "2026.11.3", 1},
		{"007", "7", 0},
	} {
		if got := decide.CompareVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := decide.CompareVersions(tc.b, tc.a); got != -tc.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tc.b, tc.a, got, -tc.want)
		}
	}
}

func FuzzCompareVersions(f *testing.F) {
	f.Add("1.2.3", "1.2.3-rc1", "v1.10")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		if decide.CompareVersions(a, b) != -decide.CompareVersions(b, a) {
			t.Fatalf("not antisymmetric: %q %q", a, b)
		}
		if decide.CompareVersions(a, b) >= 0 && decide.CompareVersions(b, c) >= 0 && decide.CompareVersions(a, c) < 0 {
			t.Fatalf("not transitive: %q %q %q", a, b, c)
		}
	})
}

// TestTasmotaMinimal: the names Tasmota's source lists for its OtaMagic
// (support_tasmota.ino, the comment above its rename), for the file part.
func TestTasmotaMinimal(t *testing.T) {
	for in, want := range map[string]string{
		"tasmota":                        "tasmota-minimal",
		"tasmota-DE":                     "tasmota-minimal",
		"tasmota.bin":                    "tasmota-minimal.bin",
		"tasmota.xyz":                    "tasmota-minimal.xyz",
		"tasmota.bin.gz":                 "tasmota-minimal.bin.gz",
		"tasmota.ino.bin.gz":             "tasmota-minimal.ino.bin.gz",
		"api/arduino/tasmota-DE.bin.gz":  "api/arduino/tasmota-minimal.bin.gz",
		"api/ard-uino/tasmota-DE.bin.gz": "api/ard-uino/tasmota-minimal.bin.gz",
	} {
		if got := decide.TasmotaMinimal(in); got != want {
			t.Errorf("decide.TasmotaMinimal(%q) = %q, want %q", in, got, want)
		}
	}
}
