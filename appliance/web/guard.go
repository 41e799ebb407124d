package web

import (
	"crypto/subtle"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"otabox/appliance/lockout"
)

// guard checks the admin password and throttles guessing (lockout).
type guard struct {
	password []byte
	log      *slog.Logger
	throttle *lockout.Throttle
}

func newGuard(password string, log *slog.Logger) *guard {
	return &guard{password: []byte(password), log: log, throttle: lockout.New(nil)}
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
		if wait := g.throttle.Locked(ip); wait > 0 {
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

// fail counts a wrong password from ip, which may lock it out.
func (g *guard) fail(ip string) {
	n, lock := g.throttle.Fail(ip)
	if lock > 0 {
		g.log.Warn("admin: wrong password; address locked out", "client", ip, "failures", n, "for", lock)
	} else {
		g.log.Warn("admin: wrong password", "client", ip, "failures_this_minute", n)
	}
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
