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

// TestPiecesJoinInAnyOrder: an image taken in pieces is whole when its
// parts cover it, whichever piece's end is observed last (a resume whose
// end is seen before the cut-off piece's was recorded as a piece).
func TestPiecesJoinInAnyOrder(t *testing.T) {
	const total = 300
	for _, tc := range []struct {
		name   string
		pieces [][2]int64
		whole  int // index of the piece that makes it whole; -1 none
	}{
		{"in order", [][2]int64{{0, 100}, {100, 200}, {200, 300}}, 2},
		{"resume seen first", [][2]int64{{120, 300}, {0, 120}}, 1},
		{"cut piece longer than the resume's start", [][2]int64{{120, 300}, {0, 130}}, 1},
		{"middle last", [][2]int64{{0, 100}, {200, 300}, {100, 200}}, 2},
		{"a gap stays a gap", [][2]int64{{0, 100}, {101, 300}}, -1},
		{"a probe then the whole", [][2]int64{{0, 1}, {0, 300}}, 1},
		{"the last piece alone", [][2]int64{{200, 300}}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p pieces
			got := -1
			for i, pc := range tc.pieces {
				if p.took("10.0.0.1", "img", pc[0], pc[1], total) {
					if got >= 0 {
						t.Fatalf("whole twice: at %d and %d", got, i)
					}
					got = i
				}
			}
			if got != tc.whole {
				t.Errorf("whole at piece %d, want %d", got, tc.whole)
			}
		})
	}
}

// FuzzCover: the parts stay sorted, disjoint and not touching, and cover
// exactly what was added.
func FuzzCover(f *testing.F) {
	f.Add([]byte{0, 10, 20, 30, 5, 25})
	f.Fuzz(func(t *testing.T, b []byte) {
		var parts []span
		var in [256]bool
		for i := 0; i+1 < len(b); i += 2 {
			s := span{int64(b[i]), int64(b[i+1])}
			if s.from >= s.to {
				continue
			}
			parts = cover(parts, s)
			for x := s.from; x < s.to; x++ {
				in[x] = true
			}
		}
		for i, q := range parts {
			if q.from >= q.to || (i > 0 && parts[i-1].to >= q.from) {
				t.Fatalf("parts %v", parts)
			}
		}
		for x := int64(0); x < 256; x++ {
			covered := false
			for _, q := range parts {
				covered = covered || (q.from <= x && x < q.to)
			}
			if covered != in[x] {
				t.Fatalf("byte %d: covered %v, added %v (%v)", x, covered, in[x], parts)
			}
		}
	})
}
