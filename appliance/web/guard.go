package web

import (
	"crypto/subtle"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Login throttling: after maxFailures wrong passwords from one address
// within failWindow, that address is answered 429 for lockBase, doubling
// with each lock-out up to lockMax. Bounded: at most maxTracked
// addresses are remembered (the oldest forgotten first).
const (
	maxFailures = 5
	failWindow  = time.Minute
	lockBase    = time.Minute
	lockMax     = time.Hour
	maxTracked  = 10000
)

// guard checks the admin password and throttles guessing.
type guard struct {
	password []byte
	log      *slog.Logger
	now      func() time.Time

	mu    sync.Mutex
	peers map[string]*peer
}

type peer struct {
	fails   []time.Time // within failWindow
	locks   int         // lock-outs so far: the next lasts lockBase << locks
	until   time.Time
	touched time.Time
}

func newGuard(password string, log *slog.Logger) *guard {
	return &guard{password: []byte(password), log: log, now: time.Now, peers: map[string]*peer{}}
}

func clientOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// protect wraps next with basic auth (any user name) and the throttle.
func (g *guard) protect(next http.HandlerFunc) http.HandlerFunc {
	if len(g.password) == 0 {
		return next
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ip := clientOf(r)
		if wait := g.locked(ip); wait > 0 {
			secs := int(wait.Round(time.Second) / time.Second)
			w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
			http.Error(w, "otabox status: too many wrong passwords from "+ip+"; try again in "+wait.Round(time.Second).String(), http.StatusTooManyRequests)
			return
		}
		_, pass, ok := r.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(pass), g.password) != 1 {
			if ok { // a browser's first request carries no credentials: not a failure
				g.fail(ip)
			}
			w.Header().Set("WWW-Authenticate", `Basic realm="otabox", charset="UTF-8"`)
			http.Error(w, "otabox status: password required", http.StatusUnauthorized)
			return
		}
		next(w, r)
	}
}

// locked is how long ip must still wait; 0 when it may try.
func (g *guard) locked(ip string) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	if p := g.peers[ip]; p != nil {
		if d := p.until.Sub(g.now()); d > 0 {
			return d
		}
	}
	return 0
}

// fail counts a wrong password from ip and locks it out past the limit.
func (g *guard) fail(ip string) {
	g.mu.Lock()
	now := g.now()
	p := g.peers[ip]
	if p == nil {
		if len(g.peers) >= maxTracked {
			g.forgetOldest()
		}
		p = &peer{}
		g.peers[ip] = p
	}
	p.touched = now
	kept := p.fails[:0]
	for _, t := range p.fails {
		if now.Sub(t) < failWindow {
			kept = append(kept, t)
		}
	}
	p.fails = append(kept, now)
	n := len(p.fails)
	var lock time.Duration
	if n >= maxFailures {
		lock = min(lockBase<<p.locks, lockMax)
		p.until, p.fails = now.Add(lock), nil
		p.locks++
	}
	g.mu.Unlock()
	if lock > 0 {
		g.log.Warn("admin: wrong password; address locked out", "client", ip, "failures", n, "for", lock)
	} else {
		g.log.Warn("admin: wrong password", "client", ip, "failures_this_minute", n)
	}
}

func (g *guard) forgetOldest() {
	var oldest string
	var at time.Time
	for ip, p := range g.peers {
		if oldest == "" || p.touched.Before(at) {
			oldest, at = ip, p.touched
		}
	}
	delete(g.peers, oldest)
}

// logged logs every request to the page and the API: method, path,
// status, client.
func logged(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		level := slog.LevelInfo
		if sw.status >= 400 {
			level = slog.LevelWarn
		}
		log.Log(r.Context(), level, "web", "client", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "status", sw.status, "took", time.Since(start).Round(time.Microsecond))
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
