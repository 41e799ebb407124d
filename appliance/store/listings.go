package store

import "sync"

// maxGathered bounds the distinct listings waiting for the writer (as the
// queue bounds everything else): past it a listing is dropped and counted.
const maxGathered = 8192

// gathered holds the catalog listings without a MAC that wait for the
// writer, identical ones counted into one (Event.Repeats): a listing costs
// a map lookup here, not a queue hand-off, a wakeup of the writer or a row.
// The writer takes them all at each commit (within lingerFor).
type gathered struct {
	mu       sync.Mutex
	evs      []*Event
	seen     map[listingKey]*Event
	requests int64         // listings the events stand for
	kick     chan struct{} // told when the first listing arrives, and when batchMax wait
}

// listingKey is what makes two listings the same request for the record:
// everything but the time they came and how long they took.
type listingKey struct {
	client, family, method, endpoint, target, decision, reason, image, digest, running, sdk string
	status                                                                                  int
	free, chip, bytes, size                                                                 int64
	completed                                                                               bool
}

func keyOf(ev *Event) listingKey {
	return listingKey{ev.Client, ev.Family, ev.Method, ev.Endpoint, ev.Target, ev.Decision, ev.Reason, ev.Image, ev.Digest, ev.Running, ev.SDK,
		ev.Status, ev.FreeSpace, ev.ChipSize, ev.Bytes, ev.Size, ev.Completed}
}

// add counts ev into the gathered listings; bound makes the record's own
// copy of a new one. False when the bound on distinct listings is reached.
func (g *gathered) add(ev *Event, bound func(*Event) *Event) bool {
	k := keyOf(ev)
	g.mu.Lock()
	defer g.mu.Unlock()
	if first, ok := g.seen[k]; ok {
		first.Repeats++
		first.Took = max(first.Took, ev.Took)
		g.requests++
		return true
	}
	if len(g.evs) >= maxGathered {
		return false
	}
	if g.seen == nil {
		g.seen = map[listingKey]*Event{}
	}
	b := bound(ev)
	b.Repeats = 1
	g.seen[k] = b
	g.evs = append(g.evs, b)
	g.requests++
	if len(g.evs) == 1 || len(g.evs) == batchMax { // the first, and enough to commit now
		select {
		case g.kick <- struct{}{}:
		default:
		}
	}
	return true
}

// take empties the gathered listings: the events and how many requests
// they stand for.
func (g *gathered) take() ([]*Event, int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	evs, n := g.evs, g.requests
	g.evs, g.seen, g.requests = nil, nil, 0
	return evs, n
}
