package httpapi

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// Limits bound the connections the server holds open.
type Limits struct {
	// PerIP caps one client address (MaxConnsPerIP when 0). A field LAN
	// has a few hundred devices at most, each with one or two connections;
	// something holding dozens is misbehaving, and must not starve the rest.
	PerIP int
	// Total caps all connections (0: no cap). When it is reached, an idle
	// keep-alive connection is closed to make room, else one that has
	// dribbled a request head for over a second; a connection sending or
	// receiving a response is never closed for a newcomer.
	Total int
}

// DefaultMaxConns is the total cap a server can afford: the open-file
// limit (which Go raises to the hard limit at start) less room for the
// store, the catalog's files, mDNS sockets and logs.
func DefaultMaxConns() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == 0 {
		return 1000
	}
	n := int(min(rl.Cur, 1<<20))
	return max(n-128, n/2)
}

// Limiter is a listener that enforces Limits. Its ConnState method must
// be the http.Server's ConnState hook, so it knows which connections are
// idle.
type Limiter struct {
	net.Listener
	lim    Limits
	log    *slog.Logger
	mu     sync.Mutex
	open   map[string]int
	conns  map[*limitedConn]struct{}
	warned map[string]time.Time
}

// NewLimiter wraps l.
func NewLimiter(l net.Listener, lim Limits, log *slog.Logger) *Limiter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if lim.PerIP <= 0 {
		lim.PerIP = MaxConnsPerIP
	}
	return &Limiter{Listener: l, lim: lim, log: log, open: map[string]int{}, conns: map[*limitedConn]struct{}{}, warned: map[string]time.Time{}}
}

// LimitPerIP wraps l with a per-address cap only.
func LimitPerIP(l net.Listener, max int, log *slog.Logger) net.Listener {
	return NewLimiter(l, Limits{PerIP: max}, log)
}

// Accept returns the next connection within the limits.
func (l *Limiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := hostOf(c.RemoteAddr().String())
		now := time.Now()
		l.mu.Lock()
		if l.open[ip] >= l.lim.PerIP {
			warn := l.warn(ip, now)
			l.mu.Unlock()
			c.Close()
			if warn {
				l.log.Warn("connection refused", "client", ip, "reason", "more than the per-address limit of open connections", "limit", l.lim.PerIP)
			}
			continue
		}
		var victim *limitedConn
		if l.lim.Total > 0 && len(l.conns) >= l.lim.Total {
			if victim = l.victim(now); victim == nil {
				warn := l.warn("", now)
				l.mu.Unlock()
				c.Close()
				if warn {
					l.log.Warn("connection refused", "client", ip, "reason", "every connection is busy with a request (--max-conns)", "limit", l.lim.Total)
				}
				continue
			}
			delete(l.conns, victim) // its slot is the newcomer's now
		}
		lc := &limitedConn{Conn: c, l: l, ip: ip, state: http.StateNew, since: now}
		l.open[ip]++
		l.conns[lc] = struct{}{}
		l.mu.Unlock()
		if victim != nil {
			victim.Close()
			l.log.Debug("connection closed to make room (--max-conns)", "client", victim.ip, "state", victim.stateName)
		}
		return lc, nil
	}
}

// victim picks the connection to close for a newcomer: the oldest status
// or API answer running for over a second (a reader that stalled, see
// markAPI), else the longest idle keep-alive, else the oldest still
// sending its head after a second. Called with mu held.
func (l *Limiter) victim(now time.Time) *limitedConn {
	var api, idle, slow *limitedConn
	for c := range l.conns {
		switch {
		case c.api && c.state == http.StateActive && now.Sub(c.since) > time.Second && (api == nil || c.since.Before(api.since)):
			api = c
		case c.state == http.StateIdle && (idle == nil || c.since.Before(idle.since)):
			idle = c
		case c.state == http.StateNew && now.Sub(c.since) > time.Second && (slow == nil || c.since.Before(slow.since)):
			slow = c
		}
	}
	if api != nil {
		api.stateName = "answering the status page or API"
		return api
	}
	if idle != nil {
		idle.stateName = "idle"
		return idle
	}
	if slow != nil {
		slow.stateName = "sending its head"
	}
	return slow
}

// warn rate-limits refusal warnings to one a minute per key.
func (l *Limiter) warn(key string, now time.Time) bool {
	if now.Sub(l.warned[key]) < time.Minute {
		return false
	}
	if len(l.warned) > 10000 {
		clear(l.warned)
	}
	l.warned[key] = now
	return true
}

// ConnState tracks which connections are idle or still sending a head.
func (l *Limiter) ConnState(c net.Conn, st http.ConnState) {
	lc, ok := find[*limitedConn](c)
	if !ok {
		return
	}
	l.mu.Lock()
	lc.state, lc.since, lc.api = st, time.Now(), false
	l.mu.Unlock()
}

// markAPI marks r's connection as answering the status page or API until
// its next state change: the first to close when connections run out.
func markAPI(r *http.Request) {
	fc, _ := r.Context().Value(connKey{}).(*fixConn)
	if fc == nil {
		return
	}
	lc, ok := find[*limitedConn](fc)
	if !ok {
		return
	}
	lc.l.mu.Lock()
	lc.api = true
	lc.l.mu.Unlock()
}

func (l *Limiter) release(c *limitedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.conns, c)
	if l.open[c.ip]--; l.open[c.ip] <= 0 {
		delete(l.open, c.ip)
	}
}

type limitedConn struct {
	net.Conn
	l         *Limiter
	ip        string
	once      sync.Once
	state     http.ConnState // guarded by l.mu
	api       bool           // answering the status page or API (markAPI); guarded by l.mu
	since     time.Time      // guarded by l.mu
	stateName string         // guarded by l.mu
}

// NetConn is the connection under the cap.
func (c *limitedConn) NetConn() net.Conn { return c.Conn }

// ReadFrom passes net/http's sendfile path down (see readFrom).
func (c *limitedConn) ReadFrom(r io.Reader) (int64, error) { return readFrom(c.Conn, r) }

func (c *limitedConn) Close() error {
	c.once.Do(func() { c.l.release(c) })
	return c.Conn.Close()
}

// hostOf is an address without its port ("10.0.0.7:5123" → "10.0.0.7");
// the one notion of "client address" for the cap, the log and the record.
func hostOf(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}
