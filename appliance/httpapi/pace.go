package httpapi

import (
	"context"
	"fmt"
	"net"
	"syscall"
	"time"
)

// Defaults for Options.MinRate and Options.RateWindow: real ESP downloads
// run at 10-50 KB/s; a client averaging under 2 KB/s over 30 s is not a
// device updating, it is holding a download slot.
const (
	DefaultMinRate    = 2048
	DefaultRateWindow = 30 * time.Second
)

// delivery reports how much of what was written on a connection the peer
// has acknowledged, from the kernel's send queue (Linux SIOCOUTQ: bytes
// written and not yet acknowledged). Bytes handed to the kernel are not
// bytes a device has: on a slow link megabytes sit in socket buffers.
type delivery struct {
	raw syscall.RawConn // nil: unknown (not TCP, or not Linux)
}

// netConner is a connection wrapper that can hand out what it wraps.
type netConner interface{ NetConn() net.Conn }

// deliveryFor finds the TCP connection under a request's context.
func deliveryFor(ctx context.Context) delivery {
	c, _ := ctx.Value(connKey{}).(*fixConn)
	if c == nil {
		return delivery{}
	}
	tc, ok := find[*net.TCPConn](c)
	if !ok {
		return delivery{}
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return delivery{}
	}
	return delivery{raw: raw}
}

// unacked is how many bytes written to the connection the peer has not
// acknowledged; ok is false when that cannot be known.
func (d delivery) unacked() (n int, ok bool) {
	if d.raw == nil {
		return 0, false
	}
	var err error
	cerr := d.raw.Control(func(fd uintptr) { n, err = outq(fd) })
	return n, cerr == nil && err == nil
}

// cork holds the connection's partial frames (on) until released (off).
func (d delivery) cork(on bool) {
	if d.raw != nil {
		d.raw.Control(func(fd uintptr) { cork(fd, on) })
	}
}

// room is how many more bytes of payload the send queue takes now.
func (d delivery) room() (int, bool) {
	if d.raw == nil {
		return 0, false
	}
	var q, sb int
	var err1, err2 error
	if d.raw.Control(func(fd uintptr) { q, err1 = outq(fd); sb, err2 = sndbuf(fd) }) != nil || err1 != nil || err2 != nil {
		return 0, false
	}
	return sb/2 - q, true
}

// pacer cuts off a download whose device acknowledges under a minimum
// rate. Two things a device cannot help are not charged to it:
//
//   - time when the socket had nothing queued: that is the sender's (its
//     poll, a disk read, a commit), and charging it cut off devices above
//     the minimum. An interval between two looks is charged, with the
//     bytes acknowledged in it, when the first look found data waiting;
//     one that starts with the queue empty is left out.
//   - the silence after an acknowledgement, as long as that
//     acknowledgement's bytes would take at the minimum rate: a device with
//     a 4 KB window acknowledges in bursts a few seconds apart (TCP's
//     receive-side silly-window avoidance), and a window ending just before
//     the next burst measured a 2,100 B/s reader at 1,922 B/s.
//
// The rate is the bytes acknowledged over the last window of such time,
// from a look that saw an acknowledgement (so a burst is never half in the
// window).
type pacer struct {
	min    int64 // bytes/s; <= 0: never
	window time.Duration
	// last look, and the busy time and bytes counted so far.
	lastT      time.Time
	lastN      int64
	lastQueued bool
	busy       time.Duration
	busyN      int64
	// the last acknowledgement seen: its busy time and its bytes.
	ackedAt time.Duration
	burst   int64
	samples []sample // at acknowledgements, a second of busy time apart, the last window's worth
}

// sample is the busy time and bytes counted up to a look.
type sample struct {
	busy time.Duration
	n    int64
}

func newPacer(min int64, window time.Duration, now time.Time) *pacer {
	return &pacer{min: min, window: window, lastT: now, samples: []sample{{}}}
}

// check records a look at now: delivered bytes acknowledged so far, and
// whether the socket still had data queued (true where it cannot be
// told). It returns an error once the last window's rate is under the
// minimum.
func (p *pacer) check(now time.Time, delivered int64, queued bool) error {
	if p.lastQueued && now.After(p.lastT) {
		p.busy += now.Sub(p.lastT)
		p.busyN += delivered - p.lastN
	}
	acked := delivered > p.lastN
	if acked {
		p.ackedAt, p.burst = p.busy, delivered-p.lastN
	}
	p.lastT, p.lastN, p.lastQueued = now, delivered, queued
	if p.min <= 0 {
		return nil
	}
	if last := p.samples[len(p.samples)-1]; acked && p.busy-last.busy >= time.Second {
		p.samples = append(p.samples, sample{p.busy, p.busyN})
	}
	// The newest sample at least a window of busy time back is where the
	// rate starts.
	from := -1
	for i, s := range p.samples {
		if p.busy-s.busy >= p.window {
			from = i
		}
	}
	if from < 0 {
		return nil // not a window of the device's time yet
	}
	p.samples = p.samples[from:]
	if rate := p.rate(); rate < float64(p.min) {
		return p.tooSlow(rate)
	}
	return nil
}

// rate is the delivery rate over the busy time since the oldest sample
// held, less the silence the last acknowledgement covers; 0 when there is
// no busy time yet.
func (p *pacer) rate() float64 {
	s := p.samples[0]
	d := p.busy - s.busy
	if d <= 0 {
		return 0
	}
	if p.min > 0 {
		covered := time.Duration(float64(p.burst) / float64(p.min) * float64(time.Second))
		d -= min(p.busy-p.ackedAt, covered)
	}
	return float64(p.busyN-s.n) / max(d.Seconds(), 1)
}

// until is how long the device, at the pace it has kept, takes to accept
// n more bytes: how long to wait before looking again (50 µs to 1 s).
func (p *pacer) until(n int) time.Duration {
	wait := time.Second
	if r := p.rate(); r > 0 {
		wait = time.Duration(float64(n) / r * float64(time.Second))
	}
	return min(max(wait, 50*time.Microsecond), time.Second)
}

func (p *pacer) tooSlow(rate float64) error {
	return fmt.Errorf("the device took %.0f bytes/s over the last %s with data waiting for it, under the minimum of %d bytes/s (--min-rate)", rate, (p.busy - p.samples[0].busy).Round(time.Second), p.min)
}

// stalled explains a write that blocked for a whole window (the queue
// full all along): the rate the device took since the oldest sample.
func (p *pacer) stalled(now time.Time, delivered int64) error {
	p.check(now, delivered, true)
	return p.tooSlow(p.rate())
}
