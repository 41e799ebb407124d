package httpapi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
)

// FixTargets wraps l so that request-targets without a leading slash reach
// the handler. AutoConnectUpdate sends "GET bin/fw.bin HTTP/1.0" and, before
// v1.3.5, "GET ./fw.bin HTTP/1.0" (spec §1.2); net/http answers both with
// 400 before any handler runs. The wrapper inserts the "/" as the bytes
// stream through, following each request head so that it never touches a
// body. It holds back at most the first 8 bytes of a target (to tell
// "hall/fw.bin" from an absolute "http://..."), and nothing else.
func FixTargets(l net.Listener) net.Listener { return &fixListener{Listener: l} }

type fixListener struct {
	net.Listener
	bufs sync.Pool // *fixBufs, lent to a connection while it reads a head
}

func (l *fixListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &fixConn{Conn: c, pool: &l.bufs}, nil
}

// fixBufs are a connection's buffers while it reads a head. They go back
// to the listener's pool once the head is read: a connection between
// requests, or sending a download for minutes, holds none, and the next
// head on a keep-alive connection takes them again instead of allocating.
type fixBufs struct{ in, out []byte } // never changed once made

type parseState uint8

const (
	stMethod   parseState = iota // request line, before the first space
	stTarget                     // first bytes of the request-target
	stLine                       // rest of the request line
	stHeader                     // header lines, until the blank one
	stBody                       // Content-Length bytes of body
	stRaw                        // pass everything (chunked body, or a head we do not follow)
	stDrop                       // a head over the limits was cut: drop the rest of the connection
	stLastLine                   // MaxHeaderLines read: only the blank line may follow
)

// overHeader is the header fixConn appends when it cuts a head over the
// limits, so that the handler answers 431 with the reason and the log and
// the record see the request. A client sending it itself is only refused.
const overHeader = "X-Otabox-Head-Over"

// fixConn rewrites request lines as they are read. It is used by one
// goroutine at a time, as net/http reads a connection.
type fixConn struct {
	net.Conn
	pool     *sync.Pool // of *fixBufs; nil: in and out are allocated as needed
	bufs     *fixBufs   // lent by pool while in or out holds bytes
	in, out  []byte
	st       parseState
	n        int    // bytes of the current method
	head     int    // bytes of the current head so far
	lines    int    // header lines of the current head so far
	col      int    // bytes of the current header line so far
	line     []byte // start of the current header line (up to 128 bytes)
	length   int64  // Content-Length of the current request
	chunked  bool
	bodyLeft int64
	names    []string                 // the version-telling header names of the head being read, in order
	lastHead atomic.Pointer[[]string] // those of the last complete head
}

// HeadOrder returns, lower-case and in the order sent, which of the
// headers that tell core versions apart (accept-encoding, connection) the
// last request head read on the connection in ctx carried; nil when
// unknown. The ESP8266 core's HTTPClient changed its header order in 2.7,
// the release that can inflate gzip images: this is how otabox tells.
func HeadOrder(ctx context.Context) []string {
	c, _ := ctx.Value(connKey{}).(*fixConn)
	if c == nil {
		return nil
	}
	if p := c.lastHead.Load(); p != nil {
		return *p
	}
	return nil
}

type connKey struct{}

// connContext makes the connection findable from its requests' contexts.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if fc, ok := find[*fixConn](c); ok {
		return context.WithValue(ctx, connKey{}, fc)
	}
	return ctx
}

// find returns the connection of type T that c is or wraps (through
// NetConn, a few layers deep).
func find[T net.Conn](c net.Conn) (T, bool) {
	for i := 0; c != nil && i < 8; i++ {
		if t, ok := c.(T); ok {
			return t, true
		}
		w, ok := c.(netConner)
		if !ok {
			break
		}
		c = w.NetConn()
	}
	var zero T
	return zero, false
}

// NetConn is the connection being rewritten.
func (c *fixConn) NetConn() net.Conn { return c.Conn }

// ReadFrom passes net/http's sendfile path down (see readFrom): only
// what the device sends is rewritten.
func (c *fixConn) ReadFrom(r io.Reader) (int64, error) { return readFrom(c.Conn, r) }

func (c *fixConn) Read(p []byte) (int, error) {
	for len(c.out) == 0 {
		c.process()
		if len(c.out) > 0 {
			break
		}
		// Read into the caller's buffer and keep a copy: no buffer of
		// our own per connection (a thousand downloads hold none).
		n, err := c.Conn.Read(p)
		if c.bufs == nil && c.pool != nil && n > 0 {
			c.bufs, _ = c.pool.Get().(*fixBufs)
			if c.bufs == nil {
				c.bufs = &fixBufs{in: make([]byte, 0, 1024), out: make([]byte, 0, 1024)}
			}
			c.in, c.out = c.bufs.in[:0], c.bufs.out[:0]
		}
		c.in = append(c.in, p[:n]...)
		if err != nil {
			c.process()
			if len(c.out) == 0 && len(c.in) > 0 {
				c.out, c.in = c.in, nil // the peer is gone: hand over what is held
			}
			if len(c.out) == 0 {
				return 0, err // not sticky: net/http aborts background reads with a deadline and reads on
			}
		}
	}
	n := copy(p, c.out)
	c.out = c.out[n:]
	if len(c.out) == 0 && len(c.in) == 0 && cap(c.in)+cap(c.out) > 0 {
		// The head is read: while the request runs (a download for
		// minutes) the connection holds no buffers.
		c.giveBack()
	}
	return n, nil
}

// giveBack returns the buffers lent to the connection to the pool, as
// they were lent: c.in and c.out are parts of them by now, or larger
// arrays that replaced them, which are dropped.
func (c *fixConn) giveBack() {
	if c.bufs != nil {
		c.pool.Put(c.bufs)
	}
	c.bufs, c.in, c.out = nil, nil, nil
}

// process moves what it can from c.in to c.out, fixing targets on the way.
func (c *fixConn) process() {
	out := c.out[:0]
	in := c.in
	i := 0
loop:
	for i < len(in) {
		switch c.st {
		case stRaw:
			out = append(out, in[i:]...)
			i = len(in)
		case stBody:
			n := int(min(c.bodyLeft, int64(len(in)-i)))
			out = append(out, in[i:i+n]...)
			i += n
			if c.bodyLeft -= int64(n); c.bodyLeft == 0 {
				c.st = stMethod
			}
		case stDrop:
			i = len(in)
		case stMethod:
			b := in[i]
			out = append(out, b)
			i++
			switch c.n++; {
			case b == ' ':
				c.head, c.lines, c.col = c.n, 0, 0
				c.st, c.n = stTarget, 0
			case b == '\n' || b == '\r':
				c.n = 0 // blank lines between requests
			case c.n > 32:
				c.st = stRaw // not a request line we understand: leave it to net/http
			}
		case stTarget:
			rest := in[i:]
			if rest[0] != '/' && rest[0] != '*' {
				end := bytes.IndexAny(rest, " \r\n")
				if end < 0 && len(rest) < 8 {
					break loop // wait for enough of the target to decide
				}
				if !hasPrefixFold(rest, "http://") && !hasPrefixFold(rest, "https://") && rest[0] != ' ' {
					out = append(out, '/')
				}
			}
			c.st = stLine
		case stLine:
			j := bytes.IndexByte(in[i:], '\n')
			if j < 0 {
				out = append(out, in[i:]...)
				c.head += len(in) - i
				i = len(in)
				break
			}
			out = append(out, in[i:i+j+1]...)
			c.head += j + 1
			i += j + 1
			c.st, c.line, c.length, c.chunked, c.names = stHeader, c.line[:0], 0, false, nil
		case stHeader:
			b := in[i]
			if b == '\r' && i+1 == len(in) {
				break loop // hold a CR back until its LF: a cut may have to take it back
			}
			if c.head++; c.head > MaxHeadBytes {
				out = c.cut(out, fmt.Sprintf("more than %d bytes", MaxHeadBytes))
				break
			}
			out = append(out, b)
			i++
			if b != '\n' {
				c.col++
				if len(c.line) < 128 {
					c.line = append(c.line, b)
				}
				break
			}
			c.col = 0
			if c.endHeaderLine(); c.st == stHeader {
				if c.lines++; c.lines >= MaxHeaderLines {
					// The next line would be one too many: end the head here
					// unless it ends by itself.
					c.st = stLastLine
				}
			}
		case stLastLine:
			if in[i] == '\r' || in[i] == '\n' {
				c.st = stHeader // the blank line: the head ends within the limit
				break
			}
			out = c.cut(out, fmt.Sprintf("more than %d header lines", MaxHeaderLines))
		}
	}
	c.out = out
	c.in = append(c.in[:0], in[i:]...)
}

// cut ends a head that went over the limits: it closes the line being
// read, appends overHeader with the reason and the blank line, and drops
// whatever else the connection sends.
func (c *fixConn) cut(out []byte, why string) []byte {
	if n := len(out); c.col > 0 && n > 0 && out[n-1] == '\r' {
		out, c.col = out[:n-1], c.col-1 // a line's CR without its LF
	}
	if c.col > 0 {
		out = append(out, "\r\n"...)
	}
	c.st, c.col = stDrop, 0
	return append(out, overHeader+": "+why+"\r\n\r\n"...)
}

func (c *fixConn) endHeaderLine() {
	line := bytes.TrimRight(c.line, "\r")
	c.line = c.line[:0]
	if len(line) == 0 { // end of the head
		names := c.names
		c.lastHead.Store(&names)
		switch {
		case c.chunked:
			c.st = stRaw
		case c.length > 0:
			c.st, c.bodyLeft = stBody, c.length
		default:
			c.st = stMethod
		}
		return
	}
	name, value, ok := bytes.Cut(line, []byte(":"))
	if !ok {
		return
	}
	value = bytes.TrimSpace(value)
	// Only the names HeadOrder reports, as constants: no copy per header.
	for _, n := range [...]string{"accept-encoding", "connection"} {
		if len(c.names) < 4 && bytes.EqualFold(bytes.TrimSpace(name), []byte(n)) {
			c.names = append(c.names, n)
		}
	}
	switch {
	case bytes.EqualFold(bytes.TrimSpace(name), []byte("Content-Length")):
		n, err := strconv.ParseInt(string(value), 10, 64)
		if err != nil || n < 0 {
			c.st = stRaw // net/http will refuse it; stop following
			return
		}
		c.length = n
	case bytes.EqualFold(bytes.TrimSpace(name), []byte("Transfer-Encoding")):
		c.chunked = true // any coding: stop following this connection
	}
}

func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && bytes.EqualFold(b[:len(prefix)], []byte(prefix))
}
