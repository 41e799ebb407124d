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

// pacer cuts off a download whose delivery averages under a minimum rate
// over a sliding window.
type pacer struct {
	min     int64 // bytes/s; <= 0: never
	window  time.Duration
	start   time.Time
	samples []sample // one a second at most, the last window's worth
}

type sample struct {
	t time.Time
	n int64
}

func newPacer(min int64, window time.Duration, now time.Time) *pacer {
	return &pacer{min: min, window: window, start: now, samples: []sample{{now, 0}}}
}

// check records that delivered bytes have arrived by now, and returns an
// error once the last window's average is under the minimum.
func (p *pacer) check(now time.Time, delivered int64) error {
	if p.min <= 0 {
		return nil
	}
	if last := p.samples[len(p.samples)-1]; now.Sub(last.t) >= time.Second {
		p.samples = append(p.samples, sample{now, delivered})
	}
	// The newest sample at least a window old is where the average starts.
	from := -1
	for i, s := range p.samples {
		if now.Sub(s.t) >= p.window {
			from = i
		}
	}
	if from < 0 {
		return nil // younger than the window
	}
	p.samples = p.samples[from:]
	if rate := p.rate(now, delivered); rate < float64(p.min) {
		return p.tooSlow(now, rate)
	}
	return nil
}

// rate is the delivery rate since the oldest sample held.
func (p *pacer) rate(now time.Time, delivered int64) float64 {
	s := p.samples[0]
	return float64(delivered-s.n) / max(now.Sub(s.t).Seconds(), 1)
}

// until is how long the device, at the pace it has kept, takes to accept
// n more bytes: how long to wait before looking again (50 µs to 1 s).
func (p *pacer) until(now time.Time, delivered int64, n int) time.Duration {
	wait := time.Second
	if r := p.rate(now, delivered); r > 0 {
		wait = time.Duration(float64(n) / r * float64(time.Second))
	}
	return min(max(wait, 50*time.Microsecond), time.Second)
}

func (p *pacer) tooSlow(now time.Time, rate float64) error {
	return fmt.Errorf("the device took %.0f bytes/s over the last %s, under the minimum of %d bytes/s (--min-rate)", rate, now.Sub(p.samples[0].t).Round(time.Second), p.min)
}

// stalled explains a write that blocked for a whole window: the rate the
// device took since the oldest sample still held.
func (p *pacer) stalled(now time.Time, delivered int64) error {
	return p.tooSlow(now, p.rate(now, delivered))
}
