package store

import (
	"testing"
	"time"
)

// TestStateMachine: every (state, happening) pair, what the device's
// update state becomes and what it does to the failure count and the
// hold-back.
func TestStateMachine(t *testing.T) {
	states := []string{StateNone, StateSent, StateCut, StateConfirmed, StateFailed}
	want := map[string]map[happening]transition{
		StateNone:      {sentWhole: {State: StateSent}, cutOff: {State: StateCut}, runsSent: {State: StateNone}, runsPrevious: {State: StateNone}, runsOther: {State: StateNone}},
		StateSent:      {sentWhole: {State: StateSent}, cutOff: {State: StateCut}, runsSent: {State: StateConfirmed, Clear: true}, runsPrevious: {State: StateFailed, Fail: true}, runsOther: {State: StateSent}},
		StateCut:       {sentWhole: {State: StateSent}, cutOff: {State: StateCut}, runsSent: {State: StateConfirmed, Clear: true}, runsPrevious: {State: StateFailed}, runsOther: {State: StateCut}},
		StateConfirmed: {sentWhole: {State: StateSent}, cutOff: {State: StateCut}, runsSent: {State: StateConfirmed}, runsPrevious: {State: StateFailed, Fail: true}, runsOther: {State: StateConfirmed}},
		StateFailed:    {sentWhole: {State: StateSent}, cutOff: {State: StateCut}, runsSent: {State: StateConfirmed, Clear: true}, runsPrevious: {State: StateFailed}, runsOther: {State: StateFailed}},
	}
	names := []string{"sent whole", "cut off", "runs the image sent", "runs what it ran before", "runs something else"}
	for _, st := range states {
		for h := sentWhole; h <= runsOther; h++ {
			if got := next(st, h); got != want[st][h] {
				t.Errorf("%q, %s: %+v, want %+v", st, names[h], got, want[st][h])
			}
		}
	}
	// Applied: a device failed twice and held back is confirmed, its hold
	// gone, once it checks in running the image.
	now := time.Now()
	d := Device{State: StateSent, SentDigests: []string{"new"}, PrevDigest: "old"}
	for i := 0; i < 2; i++ {
		next(d.State, classify(&d, "old")).apply(&d, now)
		d.State = map[bool]string{true: StateSent, false: d.State}[i == 0] // sent again after the first failure
	}
	if d.State != StateFailed || d.Failures != 2 || d.HeldUntil.IsZero() {
		t.Fatalf("after two failures: %+v", d)
	}
	next(d.State, classify(&d, "NEW")).apply(&d, now)
	if d.State != StateConfirmed || d.Failures != 0 || !d.HeldUntil.IsZero() {
		t.Fatalf("held device running the image: %+v", d)
	}
}
