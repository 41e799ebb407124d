package lockout

import (
	"fmt"
	"testing"
	"time"
)

// TestLockOutDoublesUpToAnHour: five wrong passwords within a minute lock
// an address out for a minute, then two, four, ... never more than an
// hour; failures older than a minute do not count; other addresses are
// not affected; at most MaxTracked addresses are remembered.
func TestLockOutDoublesUpToAnHour(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	th := New(func() time.Time { return now })
	for i, want := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 16 * time.Minute, 32 * time.Minute, time.Hour, time.Hour} {
		for n := 1; n < MaxFailures; n++ {
			if _, lock := th.Fail("10.0.0.7"); lock != 0 {
				t.Fatalf("lock-out %d: locked after %d failures", i, n)
			}
		}
		if _, lock := th.Fail("10.0.0.7"); lock != want {
			t.Fatalf("lock-out %d lasts %v, want %v", i, lock, want)
		}
		if th.Locked("10.0.0.7") != want || th.Locked("10.0.0.8") != 0 {
			t.Fatalf("lock-out %d: Locked %v, another address %v", i, th.Locked("10.0.0.7"), th.Locked("10.0.0.8"))
		}
		now = now.Add(want)
		if th.Locked("10.0.0.7") != 0 {
			t.Fatalf("lock-out %d outlasts %v", i, want)
		}
	}
	slow := New(func() time.Time { return now })
	for range 10 { // one a minute: never five within one
		if _, lock := slow.Fail("10.0.0.9"); lock != 0 {
			t.Fatal("failures a minute apart locked an address out")
		}
		now = now.Add(time.Minute)
	}
	many := New(func() time.Time { return now })
	for i := range MaxTracked + 100 {
		many.Fail(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255))
		now = now.Add(time.Millisecond)
	}
	if n := len(many.peers); n > MaxTracked {
		t.Errorf("%d addresses remembered, at most %d", n, MaxTracked)
	}
}
