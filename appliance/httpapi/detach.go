package httpapi

import (
	"io"
	"net/http"
	"runtime/debug"

	"otabox/appliance/catalog"
)

// A download whose connection closes when it ends (every device's: the
// updaters send HTTP/1.0 or "Connection: close") leaves net/http once its
// header is out: the handler hijacks the connection and one goroutine of
// its own streams the body, waits for the last ACK and records the end.
// net/http's goroutine for the connection and its background read, its
// buffered reader and writers and the request's response object are all
// freed for the minutes a slow device takes: a thousand devices at 20 KB/s
// held 39 KB each through net/http, 22 MB of it goroutine stacks.
// A keep-alive request (a browser, a benchmark) stays in net/http, which
// reads its next request.
//
// detach hijacks x's connection when the download may leave net/http;
// net/http flushes the header it rendered, so the bytes on the wire are
// its own (TestDetachedDownloadsAnswerAsNetHTTP).
func (h *Handler) detach(x *exchange, r *http.Request) bool {
	if h.opts.Attached || !r.Close {
		return false
	}
	if _, ok := x.dv.unacked(); !ok {
		return false // the end of the download could not be told without net/http
	}
	h.detachedMu.Lock()
	defer h.detachedMu.Unlock()
	if h.cutOff {
		return false // shutting down: stay where Close reaches it
	}
	// Hijack sends the header at once; an ESP32 fails the update when
	// the body's first byte is not there 100 ms after it (spec §2.3), so
	// the kernel holds the header until the first body bytes are written
	// (exchange.Write uncorks), as net/http sends them together.
	x.dv.cork(true)
	c, _, err := http.NewResponseController(x.w).Hijack()
	if err != nil {
		x.dv.cork(false)
		return false
	}
	x.corked = true
	// The response holds net/http's connection and, through it, its
	// buffered reader and writer: let them go (the header is written).
	x.conn, x.w = c, nil
	h.detached[c] = struct{}{}
	return true
}

// uncork releases the header held by detach, once.
func (x *exchange) uncork() {
	if x.corked {
		x.dv.cork(false)
		x.corked = false
	}
}

// stream sends a detached download's body and ends its exchange as
// ServeHTTP would have: release, log, observe. The connection is closed
// last, as net/http closes it after its handler; a panic is logged and
// ends only this download, as net/http recovers a handler's.
func (h *Handler) stream(x *exchange, data []byte, src io.Reader, e *catalog.Entry) {
	defer h.inflight.Done()
	defer func() {
		v := recover()
		x.release()
		h.detachedMu.Lock()
		delete(h.detached, x.conn)
		h.detachedMu.Unlock()
		x.conn.Close()
		if v != nil {
			h.log.Error("panic serving a download", "client", x.r.RemoteAddr, "target", x.r.RequestURI, "panic", v, "stack", string(debug.Stack()))
		}
	}()
	h.send(x, data, src, e)
	x.release()
	h.observe(x)
}

// CutOff closes the connections of the downloads that left net/http, as
// http.Server.Close does for its own; each records its end (cut off) as
// it notices. Downloads that start afterwards stay in net/http.
func (h *Handler) CutOff() int {
	h.detachedMu.Lock()
	defer h.detachedMu.Unlock()
	h.cutOff = true
	for c := range h.detached {
		c.Close()
	}
	return len(h.detached)
}
