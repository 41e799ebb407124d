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

// pieces remembers, per client address and image, how much of the image
// the client has taken from its start in ranged pieces, so that the piece
// that completes it is recorded as the completed download (and the rest
// as pieces of it), never as separate downloads. Bounded: at most
// maxPieces entries, the stale ones (an hour) forgotten first.
type pieces struct {
	mu sync.Mutex
	m  map[string]piece
}

type piece struct {
	covered int64 // bytes taken from offset 0, contiguous
	seen    time.Time
}

const maxPieces = 4096

// took notes that client took [from, to) of an image of total bytes, and
// reports whether the image is now whole.
func (p *pieces) took(client, image string, from, to, total int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[string]piece{}
	}
	key := client + "\x00" + image
	c := p.m[key]
	if from <= c.covered && to > c.covered {
		c.covered = to
	}
	if c.covered >= total {
		delete(p.m, key)
		return true
	}
	if len(p.m) >= maxPieces {
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
