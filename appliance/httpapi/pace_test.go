package httpapi

import (
	"testing"
	"time"
)

// TestPacerChargesOnlyTheDevicesTime: a device behind a 4 KB window
// acknowledges in bursts (5,792 bytes, then a closed window until its
// reader has room), and the sender leaves its socket empty for a moment
// after each burst (its poll). Looked at every 100 ms, a device whose
// bursts come every 2.7 s (2,145 B/s) is never cut off under a 2,048 B/s
// minimum over 30 s, however the window falls on the bursts; one whose
// bursts come every 4 s (1,448 B/s) is cut off within 35 s of its first
// full window. Measured over wall time up to the look, the first was cut
// at 1,922-1,997 B/s.
func TestPacerChargesOnlyTheDevicesTime(t *testing.T) {
	for _, tc := range []struct {
		name   string
		period time.Duration
		cut    bool
	}{{"2,145 B/s", 2700 * time.Millisecond, false}, {"1,448 B/s", 4 * time.Second, true}} {
		t.Run(tc.name, func(t *testing.T) {
			for phase := time.Duration(0); phase < tc.period; phase += 300 * time.Millisecond {
				start := time.Unix(1_800_000_000, 0)
				p := newPacer(DefaultMinRate, DefaultRateWindow, start)
				var delivered int64
				next := start.Add(phase)
				var cutAt time.Duration
				for at := start; at.Sub(start) < 2*time.Minute; at = at.Add(100 * time.Millisecond) {
					if !at.Before(next) {
						delivered += 5792
						next = next.Add(tc.period)
					}
					// The sender's socket is empty for 300 ms after each
					// burst, full of data otherwise.
					sinceBurst := tc.period - next.Sub(at)
					queued := sinceBurst >= 300*time.Millisecond || delivered == 0
					if err := p.check(at, delivered, queued); err != nil {
						cutAt = at.Sub(start)
						break
					}
				}
				if cut := cutAt > 0; cut != tc.cut || (cut && cutAt > DefaultRateWindow+35*time.Second) {
					t.Fatalf("phase %v: cut off at %v, want cut %v", phase, cutAt, tc.cut)
				}
			}
		})
	}
}
