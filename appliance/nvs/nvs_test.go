package nvs

import (
	"bytes"
	"encoding/binary"
	"os"
	"strings"
	"testing"
)

// TestSameBytesAsESPIDF: a partition of the values in testdata/board.csv
// is byte for byte what ESP-IDF's own generator wrote for that file
// (nvs_partition_gen.py board.csv board.bin 0x3000, its unencrypted path
// run once from the ESP-IDF source, Apache-2.0; the script is not part of
// otabox): page headers, bitmaps, entries, CRCs, the string bytes, the
// empty page and the erased last one.
func TestSameBytesAsESPIDF(t *testing.T) {
	want, err := os.ReadFile("testdata/board-espidf.bin")
	if err != nil {
		t.Fatal(err)
	}
	got, err := Build(0x3000, "otabox", []Value{
		{Key: "serial", Str: "ACME-2026-000123"},
		{Key: "password", Str: "s3cr3t-f4ct0ry-p4ssw0rd-for-board-123"},
		{Key: "slot", U32: 7, Number: true},
		{Key: "board", U32: 123, Number: true},
		{Key: "batch", Str: "tray-7"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("first difference at 0x%x: 0x%02x, ESP-IDF wrote 0x%02x", i, got[i], want[i])
			}
		}
	}
}

// TestLimits: keys of 1 to 15 bytes, sizes of whole pages (two at
// least), values that fit; each refusal says why.
func TestLimits(t *testing.T) {
	for _, tc := range []struct {
		size int
		ns   string
		vals []Value
		want string
	}{
		{4096, "otabox", nil, "at least two pages"},
		{0x3001, "otabox", nil, "multiple of 4096"},
		{0x3000, "a-namespace-too-long", nil, "1 to 15 bytes"},
		{0x3000, "otabox", []Value{{Key: "", Str: "x"}}, "1 to 15 bytes"},
		{0x3000, "otabox", []Value{{Key: "big", Str: strings.Repeat("x", 4000)}}, "more than a string may hold"},
		{0x2000, "otabox", []Value{{Key: "a", Str: strings.Repeat("x", 3000)}, {Key: "b", Str: strings.Repeat("y", 3000)}}, "do not fit"},
	} {
		if _, err := Build(tc.size, tc.ns, tc.vals); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Build(%d, %q, %d values): %v, want %q", tc.size, tc.ns, len(tc.vals), err, tc.want)
		}
	}
	// A second page takes what the first cannot.
	b, err := Build(0x3000, "otabox", []Value{{Key: "a", Str: strings.Repeat("x", 3000)}, {Key: "b", Str: strings.Repeat("y", 1000)}})
	if err != nil || binary.LittleEndian.Uint32(b[4096:]) != stateActive || b[4096+64+1] != typeSZ {
		t.Fatalf("a string on the second page: %v", err)
	}
}
