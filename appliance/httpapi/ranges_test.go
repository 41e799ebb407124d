package httpapi

import "testing"

func TestParseRange(t *testing.T) {
	const size = 1000
	for _, tc := range []struct {
		spec          string
		start, length int64
		ok            bool
	}{
		{"bytes=0-0", 0, 1, true},
		{"bytes=0-65535", 0, 1000, true}, // past the end: to the end
		{"bytes=400-", 400, 600, true},
		{"bytes=-100", 900, 100, true},
		{"bytes=-5000", 0, 1000, true},
		{"Bytes = 10-19", 10, 10, true},
		{"bytes=999-999", 999, 1, true},
		{"bytes=1000-", 0, 0, false},
		{"bytes=5-4", 0, 0, false},
		{"bytes=-0", 0, 0, false},
		{"bytes=0-1,5-6", 0, 0, false},
		{"bytes=a-b", 0, 0, false},
		{"bytes=+1-2", 0, 0, false},
		{"bytes=99999999999999999999-", 0, 0, false},
		{"items=0-1", 0, 0, false},
		{"bytes=", 0, 0, false},
	} {
		rg, err := parseRange(tc.spec, size)
		if (err == nil) != tc.ok || (tc.ok && (rg.start != tc.start || rg.length != tc.length)) {
			t.Errorf("%q: %+v %v", tc.spec, rg, err)
		}
	}
}

// FuzzParseRange: whatever the header, a range that parses lies inside
// the file and is not empty.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-0", "bytes=10-", "bytes=-5", "bytes=0-1,2-3", "bytes=9-2"} {
		f.Add(s, int64(100))
	}
	f.Fuzz(func(t *testing.T, spec string, size int64) {
		if size <= 0 {
			return
		}
		rg, err := parseRange(spec, size)
		if err != nil {
			return
		}
		if rg.start < 0 || rg.length <= 0 || rg.start+rg.length > size {
			t.Fatalf("%q of %d bytes: %+v", spec, size, rg)
		}
	})
}
