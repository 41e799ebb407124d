package store

import (
	"strings"
	"time"
)

// What a device did, as far as its update state goes.
type happening int

const (
	sentWhole    happening = iota // an image went out whole
	cutOff                        // a download of it stopped part-way
	runsSent                      // checked in running the image it was sent
	runsPrevious                  // checked in still running what it ran when it was sent it
	runsOther                     // checked in running anything else
)

// transition is what one happening does to a device's update record.
type transition struct {
	State string
	// Fail counts a failed attempt of the image (its hold-back after
	// HoldBackAfter of them); Clear ends the count and any hold-back.
	Fail, Clear bool
}

// next is the update state machine, the one place that says what a
// device's state becomes. A check-in running the image it was sent is
// confirmed, whatever the state was (sent, cut off, failed and held back:
// the device proves it runs it, so its hold ends). An image sent whole
// that the device does not come back running has failed it; a cut-off
// download is not the image's fault, so it fails without counting; a
// confirmed device that comes back to what it ran before rolled back.
func next(state string, h happening) transition {
	switch h {
	case sentWhole:
		return transition{State: StateSent}
	case cutOff:
		return transition{State: StateCut}
	case runsSent:
		if state == StateNone {
			return transition{State: StateNone} // never sent anything: nothing to confirm
		}
		return transition{State: StateConfirmed, Clear: state != StateConfirmed}
	case runsPrevious:
		switch state {
		case StateSent:
			return transition{State: StateFailed, Fail: true}
		case StateCut:
			return transition{State: StateFailed}
		case StateConfirmed:
			return transition{State: StateFailed, Fail: true} // rolled back
		}
	}
	return transition{State: state} // runsOther, or nothing new
}

// classify says what a check-in reporting digest is to device d.
func classify(d *Device, digest string) happening {
	switch {
	case containsFold(d.SentDigests, digest):
		return runsSent
	case strings.EqualFold(digest, d.PrevDigest):
		return runsPrevious
	}
	return runsOther
}

// apply folds a transition into d at now.
func (t transition) apply(d *Device, now time.Time) {
	d.State = t.State
	switch {
	case t.Clear:
		d.Failures, d.HeldUntil = 0, time.Time{}
	case t.Fail:
		d.Failures++
		if d.Failures >= HoldBackAfter && d.State == StateFailed {
			d.HeldUntil = now.Add(BackOff(int(d.Failures)))
		}
	}
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}
