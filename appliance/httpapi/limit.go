package httpapi

import (
	"log/slog"
	"net"
	"sync"
	"time"
)

// LimitPerIP wraps l so that one address holds at most max connections at
// once; further ones are closed as soon as they are accepted. A field LAN
// has a few hundred devices at most, each with one or two connections;
// something holding dozens is misbehaving, and must not starve the rest.
func LimitPerIP(l net.Listener, max int, log *slog.Logger) net.Listener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &ipLimiter{Listener: l, max: max, log: log, open: map[string]int{}, warned: map[string]time.Time{}}
}

type ipLimiter struct {
	net.Listener
	max    int
	log    *slog.Logger
	mu     sync.Mutex
	open   map[string]int
	warned map[string]time.Time
}

func (l *ipLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := hostOf(c.RemoteAddr().String())
		l.mu.Lock()
		if l.open[ip] >= l.max {
			warn := time.Since(l.warned[ip]) > time.Minute
			if warn {
				l.warned[ip] = time.Now()
			}
			l.mu.Unlock()
			c.Close()
			if warn {
				l.log.Warn("connection refused", "client", ip, "reason", "more than the per-address limit of open connections", "limit", l.max)
			}
			continue
		}
		l.open[ip]++
		l.mu.Unlock()
		return &limitedConn{Conn: c, release: func() { l.release(ip) }}, nil
	}
}

func (l *ipLimiter) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[ip]--; l.open[ip] <= 0 {
		delete(l.open, ip)
	}
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

// NetConn is the connection under the cap.
func (c *limitedConn) NetConn() net.Conn { return c.Conn }

func (c *limitedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// hostOf is an address without its port ("10.0.0.7:5123" → "10.0.0.7");
// the one notion of "client address" for the cap, the log and the ledger.
func hostOf(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}
