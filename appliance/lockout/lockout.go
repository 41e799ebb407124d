// Package lockout throttles password guessing by client address: after
// MaxFailures wrong passwords from one address within a minute, that
// address is locked out for a minute, doubling with each further
// lock-out up to an hour. The admin page and the device credentials use
// one each. Bounded: at most MaxTracked addresses are remembered, the
// least recently seen forgotten first.
package lockout

import (
	"sync"
	"time"
)

// The throttle's limits.
const (
	MaxFailures = 5
	FailWindow  = time.Minute
	LockBase    = time.Minute
	LockMax     = time.Hour
	MaxTracked  = 10000
)

// Throttle remembers wrong passwords per address. The zero value is not
// usable; call New.
type Throttle struct {
	now func() time.Time

	mu    sync.Mutex
	peers map[string]*peer
}

type peer struct {
	fails   []time.Time // within FailWindow
	locks   int         // lock-outs so far: the next lasts LockBase << locks
	until   time.Time
	touched time.Time
}

// New returns a throttle on the wall clock, or on now when it is set.
func New(now func() time.Time) *Throttle {
	if now == nil {
		now = time.Now
	}
	return &Throttle{now: now, peers: map[string]*peer{}}
}

// Locked is how long addr must still wait; 0 when it may try.
func (t *Throttle) Locked(addr string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p := t.peers[addr]; p != nil {
		if d := p.until.Sub(t.now()); d > 0 {
			return d
		}
	}
	return 0
}

// Fail counts a wrong password from addr: failures is how many within the
// last minute, lock how long addr is now locked out (0 while under the
// limit).
func (t *Throttle) Fail(addr string) (failures int, lock time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	p := t.peers[addr]
	if p == nil {
		if len(t.peers) >= MaxTracked {
			t.forgetOldest()
		}
		p = &peer{}
		t.peers[addr] = p
	}
	p.touched = now
	kept := p.fails[:0]
	for _, at := range p.fails {
		if now.Sub(at) < FailWindow {
			kept = append(kept, at)
		}
	}
	p.fails = append(kept, now)
	failures = len(p.fails)
	if failures >= MaxFailures {
		lock = min(LockBase<<p.locks, LockMax)
		p.until, p.fails = now.Add(lock), nil
		p.locks++
	}
	return failures, lock
}

func (t *Throttle) forgetOldest() {
	var oldest string
	var at time.Time
	for addr, p := range t.peers {
		if oldest == "" || p.touched.Before(at) {
			oldest, at = addr, p.touched
		}
	}
	delete(t.peers, oldest)
}
