package httpapi

import (
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"otabox/appliance/lograte"
)

// Answers to people and probes (the status page, /api/*, /metrics) are
// bounded in number, time and what they hold, so that a LAN client that
// asks and never reads cannot take the memory or the connections devices
// need:
//
//   - at most MaxAPI of them are answered at once; the next gets 503 with
//     Retry-After at once (Connection: close), and one WARN a minute counts
//     them;
//   - each write must go out within extraWriteIdle, and the whole answer
//     within extraWriteMax (Server's WriteTimeout): a reader that stalls is
//     closed, and its answer's memory freed;
//   - while it is answered its connection is marked (markAPI), so that the
//     Limiter closes one stalled in its answer first when connections run
//     out.
const (
	DefaultMaxAPI  = 32
	extraWriteIdle = 10 * time.Second
	extraWriteMax  = 60 * time.Second
)

// extraGate counts the status and API answers running.
type extraGate struct {
	slots chan struct{}
	log   *slog.Logger

	mu       sync.Mutex
	refusals lograte.Gate
}

func newExtraGate(n int, log *slog.Logger) *extraGate {
	if n <= 0 {
		n = DefaultMaxAPI
	}
	return &extraGate{slots: make(chan struct{}, n), log: log}
}

// serve answers r with next if a slot is free, else 503.
func (g *extraGate) serve(next http.Handler, w http.ResponseWriter, r *http.Request) {
	select {
	case g.slots <- struct{}{}:
	default:
		g.refuse(w, r)
		return
	}
	defer func() { <-g.slots }()
	markAPI(r)
	dw := &deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), end: time.Now().Add(extraWriteMax)}
	dw.extend()
	next.ServeHTTP(dw, r)
	// What net/http still holds goes out under the same deadline.
	dw.extend()
	dw.rc.Flush()
}

func (g *extraGate) refuse(w http.ResponseWriter, r *http.Request) {
	n := cap(g.slots)
	g.mu.Lock()
	refused, say := g.refusals.Note(time.Now())
	g.mu.Unlock()
	if say {
		g.log.Warn("status page and API: too many answers at once; refused", "client", r.RemoteAddr, "path", r.URL.Path, "at_once", n, "refused_since_last_warning", refused)
	}
	reason := "the status page and API are answering " + strconv.Itoa(n) + " requests at once; retry"
	w.Header().Set("Retry-After", "1")
	w.Header().Set("Connection", "close")
	w.Header().Set("X-Otabox-Reason", reason)
	http.Error(w, reason, http.StatusServiceUnavailable)
}

// deadlineWriter gives each write extraWriteIdle to go out, within the
// answer's end.
type deadlineWriter struct {
	http.ResponseWriter
	rc  *http.ResponseController
	end time.Time
}

func (d *deadlineWriter) extend() {
	t := time.Now().Add(extraWriteIdle)
	if t.After(d.end) {
		t = d.end
	}
	d.rc.SetWriteDeadline(t)
}

// Prolong moves the answer's end to extraWriteMax from now: an answer
// that first read a long request body (an upload from the status page,
// bounded by its own read deadlines) still has its time to be written.
func (d *deadlineWriter) Prolong() {
	d.end = time.Now().Add(extraWriteMax)
	d.extend()
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	d.extend()
	return d.ResponseWriter.Write(p)
}

func (d *deadlineWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }
