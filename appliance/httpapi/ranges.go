package httpapi

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ESP-IDF's esp_https_ota, with partial_http_download, asks HEAD for the
// length, then GETs the image in pieces: "Range: bytes=0-65535", then
// "bytes=N-(N+65535)" and "bytes=N-" for the last, each on a connection
// of its own (components/esp_https_ota/src/esp_https_ota.c, IDF 5.x). A
// link that drops mid-image resumes the same way. Only single ranges are
// served; anything else about a Range header is refused with 416 and the
// reason, never guessed at.

// byteRange is the part of a file a request asked for.
type byteRange struct {
	start, length int64
}

var errMultiRange = errors.New("only one byte range per request is served")

// parseRange reads a Range header for a file of size bytes: "bytes=a-b",
// "bytes=a-" or "bytes=-n" (the last n).
func parseRange(spec string, size int64) (byteRange, error) {
	unit, set, ok := strings.Cut(strings.TrimSpace(spec), "=")
	if !ok || !strings.EqualFold(strings.TrimSpace(unit), "bytes") {
		return byteRange{}, errors.New("range " + strconv.Quote(spec) + ": only bytes ranges are served")
	}
	if strings.Contains(set, ",") {
		return byteRange{}, errMultiRange
	}
	first, last, ok := strings.Cut(strings.TrimSpace(set), "-")
	if !ok {
		return byteRange{}, errors.New("range " + strconv.Quote(spec) + " is not first-last")
	}
	num := func(s string) (int64, bool) {
		if s == "" || len(s) > 19 || strings.TrimLeft(s, "0123456789") != "" {
			return 0, false
		}
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil
	}
	if first == "" { // the last n bytes
		n, ok := num(last)
		if !ok || n == 0 {
			return byteRange{}, errors.New("range " + strconv.Quote(spec) + " asks for no bytes")
		}
		n = min(n, size)
		return byteRange{start: size - n, length: n}, nil
	}
	a, ok := num(first)
	if !ok {
		return byteRange{}, errors.New("range " + strconv.Quote(spec) + " is not first-last")
	}
	if a >= size {
		return byteRange{}, errors.New("range " + strconv.Quote(spec) + " starts at or past the end of the " + strconv.FormatInt(size, 10) + "-byte file")
	}
	b := size - 1
	if last != "" {
		if b, ok = num(last); !ok || b < a {
			return byteRange{}, errors.New("range " + strconv.Quote(spec) + " is not first-last")
		}
		b = min(b, size-1)
	}
	return byteRange{start: a, length: b - a + 1}, nil
}

// pieces remembers, per client address and image, which parts of the
// image the client has taken in ranged pieces, so that the piece that
// makes it whole is recorded as the completed download (and the rest as
// pieces of it), never as separate downloads. The parts are kept as
// intervals, not as a prefix: a piece's end is observed after its last
// ACK, and a client that is quick to ask for the next piece (a resume
// after a cut, ESP-IDF's next 64 KB) can have it observed first.
// Bounded: at most maxPieces entries of at most maxParts intervals, the
// stale ones (an hour) forgotten first.
type pieces struct {
	mu sync.Mutex
	m  map[string]piece
}

type piece struct {
	parts []span // disjoint, sorted, not touching
	seen  time.Time
}

// span is the bytes [from, to) of an image.
type span struct{ from, to int64 }

const (
	maxPieces = 4096
	maxParts  = 64 // an image taken in more scattered parts than this starts over
)

// took notes that client took [from, to) of an image of total bytes, and
// reports whether the image is now whole.
func (p *pieces) took(client, image string, from, to, total int64) bool {
	if from >= to {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[string]piece{}
	}
	key := client + "\x00" + image
	c := p.m[key]
	c.parts = cover(c.parts, span{from, to})
	if len(c.parts) == 1 && c.parts[0].from <= 0 && c.parts[0].to >= total {
		delete(p.m, key)
		return true
	}
	if len(c.parts) > maxParts {
		c.parts = []span{{from, to}}
	}
	if _, known := p.m[key]; !known && len(p.m) >= maxPieces {
		for k, v := range p.m {
			if time.Since(v.seen) > time.Hour {
				delete(p.m, k)
			}
		}
		if len(p.m) >= maxPieces {
			clear(p.m)
		}
	}
	c.seen = time.Now()
	p.m[key] = c
	return false
}

// cover adds s to the sorted, disjoint parts, merging what it touches.
func cover(parts []span, s span) []span {
	out := make([]span, 0, len(parts)+1)
	for _, q := range parts {
		switch {
		case q.to < s.from: // before s, apart
			out = append(out, q)
		case q.from > s.to: // after s, apart
			if s.from < s.to {
				out = append(out, s)
				s = span{}
			}
			out = append(out, q)
		default: // overlapping or touching: one part
			s = span{min(s.from, q.from), max(s.to, q.to)}
		}
	}
	if s.from < s.to {
		out = append(out, s)
	}
	return out
}
