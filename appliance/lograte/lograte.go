// Package lograte says a recurring fault at most once a minute, with how
// many times it came since it was last said: a fault that comes and goes
// (a full disk, a flapping folder, a flood of refusals) is one line a
// minute, never one per occurrence, and the line still counts them.
package lograte

import "time"

// Every is how long a Gate stays quiet after it has spoken.
const Every = time.Minute

// Gate counts occurrences and says when they are due to be logged. It is
// not safe for concurrent use: its owner holds its own lock around it.
// The zero value is ready, and due at the first occurrence.
type Gate struct {
	said  time.Time // when it last spoke; zero: never
	count int       // occurrences since then
}

// Count notes one occurrence without asking whether to speak.
func (g *Gate) Count() { g.count++ }

// Due reports, at now, whether a line is due, and how many occurrences
// it covers; when it is, the count starts again from nothing.
func (g *Gate) Due(now time.Time) (n int, due bool) {
	if !g.said.IsZero() && now.Sub(g.said) < Every {
		return 0, false
	}
	n, g.said, g.count = g.count, now, 0
	return n, true
}

// Note is Count then Due: the usual case, where every occurrence may be
// the one to speak.
func (g *Gate) Note(now time.Time) (n int, due bool) {
	g.Count()
	return g.Due(now)
}

// Reset forgets what was said: the next occurrence speaks at once.
func (g *Gate) Reset() { *g = Gate{} }
