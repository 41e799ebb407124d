package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Quick wraps l (a FixTargets listener) so that catalog listings are
// answered without net/http's per-request machinery: a response object
// from a pool, a cancellable context, and a background read started and
// aborted around every request, which together cost a 200-byte listing
// more than everything otabox does for it. Each new connection is read
// here first; an HTTP/1.1 GET of /_catalog with no body is parsed (by
// parseListing in the plain form devices send, else by net/http's own
// http.ReadRequest) and handed to srv's Handler with a ResponseWriter
// that writes the response as net/http would, byte for byte but the Date
// (TestQuickAnswersAsNetHTTP). The first request of
// any other kind, or any request this path does not take (HTTP/1.0, a
// body, Expect, a head over 4 KB, a parse error), hands the connection
// with every byte read so far to net/http, which keeps it from then on.
//
// srv must be configured before Quick is called: its Handler,
// ReadHeaderTimeout and IdleTimeout apply here too, and its ConnState
// hook is told when a connection here is active or idle.
func Quick(l net.Listener, srv *http.Server) net.Listener {
	q := &quickListener{
		Listener: l,
		srv:      srv,
		conns:    make(chan net.Conn),
		errs:     make(chan error),
		done:     make(chan struct{}),
		open:     map[net.Conn]bool{},
	}
	go q.accept()
	return q
}

// quickHeadMax is the largest head read here; devices send under 300
// bytes. A larger one goes to net/http, with its own limits.
const quickHeadMax = 4096

type quickListener struct {
	net.Listener
	srv   *http.Server
	conns chan net.Conn // connections handed to net/http
	errs  chan error
	done  chan struct{}
	once  sync.Once
	mu    sync.Mutex
	open  map[net.Conn]bool // connections read here; true while a request runs
	dates dateClock
}

// dateClock is the Date header line of the current second, formatted once
// per second rather than once per listing (as net/http's own, it has a
// second's resolution).
type dateClock struct{ line atomic.Pointer[dateLine] }

type dateLine struct {
	sec  int64
	text []byte // "Date: Mon, 02 Jan 2006 15:04:05 GMT\r\n"
}

func (d *dateClock) at(now time.Time) []byte {
	sec := now.Unix()
	if l := d.line.Load(); l != nil && l.sec == sec {
		return l.text
	}
	text := append([]byte("Date: "), now.UTC().AppendFormat(nil, http.TimeFormat)...)
	l := &dateLine{sec: sec, text: append(text, "\r\n"...)}
	d.line.Store(l)
	return l.text
}

func (q *quickListener) Accept() (net.Conn, error) {
	select {
	case c := <-q.conns:
		return c, nil
	case err := <-q.errs:
		return nil, err
	case <-q.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting and closes the connections waiting here for a
// request; one being answered is closed when its answer is written.
func (q *quickListener) Close() error {
	err := q.Listener.Close()
	q.once.Do(func() {
		close(q.done)
		q.mu.Lock()
		for c, busy := range q.open {
			if !busy {
				c.Close()
			}
		}
		q.mu.Unlock()
	})
	return err
}

func (q *quickListener) accept() {
	for {
		c, err := q.Listener.Accept()
		if err != nil {
			select {
			case q.errs <- err: // net/http retries temporary errors itself
			case <-q.done:
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if !q.track(c, false) {
			c.Close()
			continue
		}
		go q.serve(c)
	}
}

// track records c as read here (busy while a request runs); false once
// the listener is closed.
func (q *quickListener) track(c net.Conn, busy bool) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	select {
	case <-q.done:
		return false
	default:
	}
	q.open[c] = busy
	return true
}

func (q *quickListener) untrack(c net.Conn) {
	q.mu.Lock()
	delete(q.open, c)
	q.mu.Unlock()
}

func (q *quickListener) state(c net.Conn, st http.ConnState) {
	if q.srv.ConnState != nil {
		q.srv.ConnState(c, st)
	}
}

// serve answers catalog listings on c until another request comes, which
// it hands to net/http with the bytes already read, or c ends.
func (q *quickListener) serve(c net.Conn) {
	br := bufio.NewReaderSize(c, quickHeadMax)
	// The context net/http would give the connection's requests.
	ctx := context.WithValue(context.Background(), http.ServerContextKey, q.srv)
	ctx = context.WithValue(ctx, http.LocalAddrContextKey, c.LocalAddr())
	if q.srv.ConnContext != nil {
		ctx = q.srv.ConnContext(ctx, c)
	}
	base := (&http.Request{}).WithContext(ctx) // what parseListing's requests are made from
	w := quickWriter{dates: &q.dates}
	var head []byte
	var writeBy time.Time // the write deadline in force
	remote := c.RemoteAddr().String()
	wait := q.srv.ReadHeaderTimeout // the first request; then IdleTimeout between requests
	for {
		c.SetReadDeadline(deadline(wait))
		// One deadline for the whole head from its first byte, here and,
		// if the request is handed over, in net/http (headBy): a head
		// dribbled past it is closed, however it is split between the two.
		var headBy time.Time
		n, ok, err := quickHead(br, func() {
			headBy = deadline(q.srv.ReadHeaderTimeout)
			c.SetReadDeadline(headBy)
		})
		var ne net.Error
		if err != nil && ((errors.As(err, &ne) && ne.Timeout()) || br.Buffered() == 0) {
			q.untrack(c)
			c.Close() // gone or timed out, as net/http would close it (no answer)
			return
		}
		if !ok {
			q.handOff(c, br, nil, headBy)
			return
		}
		head = append(head[:0], peek(br, n)...) // kept to hand over if the request is not taken
		req, ok := parseListing(head, base)
		if ok {
			br.Discard(n)
		} else if req, err = http.ReadRequest(br); err != nil || !quickTakes(req, head) {
			q.handOff(c, br, head, headBy)
			return
		} else {
			req = req.WithContext(ctx)
		}
		if !q.track(c, true) {
			c.Close()
			return
		}
		q.state(c, http.StateActive)
		req.RemoteAddr = remote
		w.reset(req)
		q.srv.Handler.ServeHTTP(&w, req)
		// The write deadline gives each response between half of
		// ReadHeaderTimeout and all of it, renewed only when less than
		// half is left: setting and clearing it around every listing was
		// 1.5 % of what one costs.
		if wt := q.srv.ReadHeaderTimeout; wt > 0 && time.Until(writeBy) < wt/2 {
			writeBy = deadline(wt)
			c.SetWriteDeadline(writeBy)
		}
		_, err = c.Write(w.response())
		if err != nil || w.closeAfter || !q.track(c, false) {
			q.untrack(c)
			c.Close()
			return
		}
		q.state(c, http.StateIdle)
		wait = q.srv.IdleTimeout
	}
}

func deadline(d time.Duration) time.Time {
	if d <= 0 {
		return time.Time{}
	}
	return time.Now().Add(d)
}

// peek returns the next n buffered bytes without consuming them.
func peek(br *bufio.Reader, n int) []byte {
	b, _ := br.Peek(n)
	return b
}

// quickHead reads until br holds a whole request head that may be a
// catalog listing, and returns its length with ok. It stops, !ok, as soon
// as the bytes cannot be one (another method or target), or the head
// outgrows quickHeadMax. started runs once the first byte has arrived.
func quickHead(br *bufio.Reader, started func()) (n int, ok bool, err error) {
	const want = "GET /_catalog"
	first := true
	for {
		b, _ := br.Peek(br.Buffered())
		if len(b) > 0 && first {
			started()
			first = false
		}
		m := min(len(b), len(want))
		if string(b[:m]) != want[:m] {
			return 0, false, nil
		}
		if len(b) > len(want) && b[len(want)] != '?' && b[len(want)] != ' ' {
			return 0, false, nil // "/_catalogue.bin": a file
		}
		if end := headEnd(b); end > 0 {
			return end, true, nil
		}
		if len(b) >= quickHeadMax {
			return 0, false, nil
		}
		if _, err := br.Peek(len(b) + 1); err != nil {
			return len(b), false, err
		}
	}
}

// headEnd is the length of the head at the start of b, through the blank
// line that ends it (CRLF or a bare LF, as net/http accepts), or 0.
func headEnd(b []byte) int {
	for i := bytes.IndexByte(b, '\n'); i >= 0; {
		rest := b[i+1:]
		switch {
		case len(rest) > 0 && rest[0] == '\n':
			return i + 2
		case len(rest) > 1 && rest[0] == '\r' && rest[1] == '\n':
			return i + 3
		}
		j := bytes.IndexByte(rest, '\n')
		if j < 0 {
			return 0
		}
		i += j + 1
	}
	return 0
}

// quickTakes reports whether req (read from head) is a request this path
// answers exactly as net/http would: HTTP/1.1, GET of the catalog, no
// body, nothing that changes how net/http frames or keeps the connection,
// and none of the faults net/http's server answers 400 itself (one valid
// Host, valid header names and values).
func quickTakes(req *http.Request, head []byte) bool {
	if req.Method != http.MethodGet || req.ProtoMajor != 1 || req.ProtoMinor != 1 ||
		req.URL.Path != CatalogPath || req.ContentLength != 0 || len(req.TransferEncoding) != 0 ||
		req.Header.Get("Expect") != "" || req.Header.Get("Upgrade") != "" {
		return false
	}
	if hostLines(head) != 1 || !httpguts.ValidHostHeader(req.Host) {
		return false // http.ReadRequest drops Host from the header: count it in the head
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return false
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return false
			}
		}
	}
	return true
}

// hostLines counts the Host header lines of a request head.
func hostLines(head []byte) int {
	n := 0
	for line := range bytes.Lines(head) {
		if len(line) >= 5 && bytes.EqualFold(line[:5], []byte("host:")) {
			n++
		}
	}
	return n
}

// handOff gives c to net/http, which reads head (a request this path did
// not take) and whatever br still holds before reading c again, and must
// have the head whole by headBy (zero: net/http's own timeout).
func (q *quickListener) handOff(c net.Conn, br *bufio.Reader, head []byte, headBy time.Time) {
	c.SetDeadline(time.Time{}) // net/http sets its own
	pending := append(head, peek(br, br.Buffered())...)
	hc := &handedConn{Conn: c, pending: pending, headBy: headBy}
	q.untrack(c)
	select {
	case q.conns <- hc:
	case <-q.done:
		c.Close()
	}
}

// handedConn is a connection net/http takes over: it reads the bytes the
// quick path had already read, then the connection.
type handedConn struct {
	net.Conn
	pending []byte
	// headBy is when the head that began on the quick path must be whole.
	// net/http's first SetReadDeadline is its head deadline for that
	// request (conn.readRequest), counted from when it started reading:
	// it is held to headBy instead, so the quick path's time is not given
	// again. Later deadlines (the body, the idle wait) pass as they are.
	headBy time.Time
}

func (c *handedConn) SetReadDeadline(t time.Time) error {
	if by := c.headBy; !by.IsZero() {
		c.headBy = time.Time{}
		if t.IsZero() || t.After(by) {
			t = by
		}
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *handedConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		if c.pending = c.pending[n:]; len(c.pending) == 0 {
			c.pending = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// NetConn is the connection underneath (HeadOrder and the Limiter find
// theirs through it).
func (c *handedConn) NetConn() net.Conn { return c.Conn }

// ReadFrom passes net/http's sendfile path down (see readFrom).
func (c *handedConn) ReadFrom(r io.Reader) (int64, error) { return readFrom(c.Conn, r) }

// quickWriter is the ResponseWriter of one quick request: it keeps the
// header and body and renders them as net/http's chunkWriter.writeHeader
// would for a handler that has returned (so a missing Content-Length is
// the body's length), for an HTTP/1.1 GET.
type quickWriter struct {
	req        *http.Request
	header     http.Header
	sent       http.Header     // the header as it was at WriteHeader
	exclude    map[string]bool // what response leaves out of sent
	status     int
	body       []byte
	out        bytes.Buffer // the response, reused by the connection's next one
	closeAfter bool
	dates      *dateClock
}

func (w *quickWriter) reset(req *http.Request) {
	w.req, w.status, w.body = req, 0, w.body[:0]
	if w.header == nil {
		w.header = http.Header{}
	} else {
		clear(w.header)
	}
}

func (w *quickWriter) Header() http.Header { return w.header }

func (w *quickWriter) WriteHeader(code int) {
	if w.status != 0 || code < 200 {
		return // informational responses are not sent on this path
	}
	// A copy, as net/http takes (later changes are not sent), into a map
	// the connection's requests share: no allocation per listing.
	if w.sent == nil {
		w.sent = http.Header{}
	}
	clear(w.sent)
	maps.Copy(w.sent, w.header)
	w.status = code
}

func (w *quickWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	w.body = append(w.body, b...)
	return len(b), nil
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// response renders the status line, header and body, and sets closeAfter.
func (w *quickWriter) response() []byte {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	hd, code := w.sent, w.status
	if w.exclude == nil {
		w.exclude = map[string]bool{}
	}
	exclude := w.exclude
	clear(exclude)
	exclude["Transfer-Encoding"] = true // never set by the catalog handler; a length always is
	var length, ctype, conn string
	if bodyAllowed(code) {
		if _, ok := hd["Content-Type"]; !ok && hd.Get("Content-Encoding") == "" && len(w.body) > 0 {
			ctype = http.DetectContentType(w.body)
		}
		if _, ok := hd["Content-Length"]; !ok {
			length = strconv.Itoa(len(w.body))
		}
	} else {
		exclude["Content-Length"] = true
		if code == http.StatusNotModified {
			exclude["Content-Type"] = true
		}
	}
	_, hasDate := hd["Date"]
	w.closeAfter = w.req.Close || hd.Get("Connection") == "close"
	if w.closeAfter && !hasCloseToken(hd.Get("Connection")) {
		exclude["Connection"] = true
		conn = "close"
	}
	buf := &w.out
	buf.Reset()
	var num [20]byte
	buf.WriteString("HTTP/1.1 ")
	buf.Write(strconv.AppendInt(num[:0], int64(code), 10))
	if text := http.StatusText(code); text != "" {
		buf.WriteString(" " + text)
	} else {
		buf.WriteString(" status code ")
		buf.Write(strconv.AppendInt(num[:0], int64(code), 10))
	}
	buf.WriteString("\r\n")
	hd.WriteSubset(buf, exclude)
	if !hasDate {
		buf.Write(w.dates.at(time.Now()))
	}
	for _, kv := range [][2]string{{"Content-Length", length}, {"Content-Type", ctype}, {"Connection", conn}} {
		if kv[1] != "" {
			buf.WriteString(kv[0] + ": " + kv[1] + "\r\n")
		}
	}
	buf.WriteString("\r\n")
	buf.Write(w.body)
	return buf.Bytes()
}

func hasCloseToken(v string) bool {
	for f := range strings.SplitSeq(v, ",") {
		if strings.EqualFold(strings.TrimSpace(f), "close") {
			return true
		}
	}
	return false
}
