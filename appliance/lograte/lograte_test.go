package lograte

import (
	"testing"
	"time"
)

// TestOnceAMinuteWithTheCount: the first occurrence speaks; the next ones
// within the minute do not; the first after it speaks with how many came
// meanwhile, itself included; Reset makes the next speak at once.
func TestOnceAMinuteWithTheCount(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	var g Gate
	if n, due := g.Note(now); !due || n != 1 {
		t.Fatalf("first: %d %v", n, due)
	}
	for i := 0; i < 26; i++ {
		now = now.Add(2 * time.Second)
		if _, due := g.Note(now); due {
			t.Fatalf("occurrence %d within the minute spoke", i+2)
		}
	}
	now = now.Add(Every)
	if n, due := g.Note(now); !due || n != 27 {
		t.Fatalf("after the minute: %d %v, want 27 true", n, due)
	}
	g.Count() // counted, not asked
	g.Reset()
	if n, due := g.Note(now.Add(time.Second)); !due || n != 1 {
		t.Fatalf("after Reset: %d %v", n, due)
	}
}
