// Package httpapi speaks the device dialect on the wire: AutoConnect's
// catalog listing (/_catalog), firmware downloads by name, and the fixed
// update URL for self-updating sketches. It turns decide's verdicts into
// status lines and bytes, exactly as the ESP HTTP clients need them
// (protocol spec §9): explicit Content-Length, one lower-case x-MD5, no
// redirects, header and first body bytes written together.
package httpapi

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"otabox/appliance/catalog"
	"otabox/appliance/decide"
	"otabox/appliance/device"
	"otabox/appliance/espimage"
	"otabox/appliance/lockout"
	"otabox/appliance/lograte"
	"otabox/appliance/manifest"
	"otabox/appliance/policy"
)

// CatalogPath is AutoConnect's AUTOCONNECT_UPDATE_CATALOG.
const CatalogPath = "/_catalog"

// Request limits. A device request has about 15 header fields and a
// target of a folder and a name (each name under 129 bytes); these leave
// room for browsers and probes and refuse the rest.
const (
	MaxTarget = 1024
	// MaxHeadBytes and MaxHeaderLines bound a request head (duplicates
	// counted): past them the head is cut where it stands and answered
	// 431 (see FixTargets).
	MaxHeadBytes   = 16 << 10
	MaxHeaderLines = 48
	// MaxConnsPerIP is the default bound on one address's open
	// connections (LimitPerIP).
	MaxConnsPerIP = 16
)

// Options configure a Handler.
type Options struct {
	Logger *slog.Logger
	// UpdatePath is the fixed URL that answers with the newest image for the
	// asking device ("/update"); empty turns it off.
	UpdatePath string
	// StallTimeout bounds how long one write of a download may wait for a
	// device that stopped reading, when MinRate is off. There is no
	// whole-response timeout: a slow device may take minutes.
	StallTimeout time.Duration
	// MinRate cuts off a download whose device acknowledges fewer bytes a
	// second than this, averaged over RateWindow (defaults DefaultMinRate,
	// DefaultRateWindow; negative turns it off), freeing its slot.
	MinRate    int64
	RateWindow time.Duration
	// Decided, when set, is told of every firmware and update decision
	// (serve, 304, refusal) as its status line is written, and returns
	// what waits until the recorder has made it durable (nil: nothing to
	// wait for). An answer without a body waits for it before its status
	// line. A body streams at once and only its last HoldBack bytes wait:
	// if the decision is not durable they are never sent and the download
	// fails (the device retries), so that no device completes an image
	// the record does not hold.
	Decided func(*Exchange) (durable func() bool)
	// Observe, when set, is told of every request once it is answered
	// (with the same *Exchange Decided saw, now with its outcome).
	Observe func(*Exchange)
	// Record, when set, is what the fleet record knows of a device: the
	// image (if any) held back after failed updates, for which the
	// decision answers 304 instead of sending it, and the filesystem
	// image it last received whole.
	Record func(*device.Facts) decide.Record
	// Batch, when set, names the open factory batch that covers a device
	// asking /update (nil for none); the batch's image is what it gets.
	Batch func(*device.Facts) *decide.Batch
	// DeviceAuth, when its Password is set, requires HTTP basic auth on
	// firmware GETs and /update (and the catalog when Catalog is set).
	DeviceAuth DeviceAuth
	// Downloads, when set, tracks firmware bodies in flight.
	Downloads *Downloads
	// Extra serves what is not a device endpoint (status page, API,
	// metrics): exact "/" and paths under /api/, plus /metrics and /healthz.
	Extra http.Handler
	// MaxAPI bounds the Extra answers running at once (DefaultMaxAPI when
	// 0); see extraGate.
	MaxAPI int
	// Attached keeps every download in net/http's handler (see detach);
	// tests compare the two.
	Attached bool
}

// DeviceAuth is the credential devices send with setAuthorization(user,
// pass): firmware often embeds Wi-Fi passwords and API keys, and without
// it any LAN client with the right User-Agent downloads every image.
type DeviceAuth struct {
	User, Password string
	// Catalog also protects /_catalog. AutoConnectUpdate sends no
	// credentials, so this is for sketches that list with their own client.
	Catalog bool
}

// allows reports whether r carries the credential, compared in constant
// time.
func (a DeviceAuth) allows(r *http.Request) bool {
	user, pass, ok := r.BasicAuth()
	u := subtle.ConstantTimeCompare([]byte(user), []byte(a.User))
	p := subtle.ConstantTimeCompare([]byte(pass), []byte(a.Password))
	return ok && u&p == 1
}

// Handler serves the device endpoints from one catalog.
type Handler struct {
	cat       atomic.Pointer[catalog.Catalog]
	policy    atomic.Pointer[policy.Policy]
	opts      Options
	log       *slog.Logger
	chips     *chipMemory
	guesses   *lockout.Throttle // wrong device passwords, by address
	pieces    pieces            // ranged downloads, by client and image
	extra     *extraGate
	inflaters *inflaters
	big       chan *[]byte // the maxChunk buffers (see lend), nil until first used
	small     sync.Pool    // smallChunk buffers, for writes that may block
	inflight  sync.WaitGroup

	detachedMu sync.Mutex
	detached   map[net.Conn]struct{} // connections of downloads that left net/http
	cutOff     bool                  // CutOff was called: no more leave
}

// Wait returns once every request being handled has been answered and
// observed, or when ctx is done.
func (h *Handler) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { h.inflight.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// New returns the handler for cat.
func New(cat *catalog.Catalog, opts Options) *Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.StallTimeout == 0 {
		opts.StallTimeout = 2 * time.Minute
	}
	if opts.MinRate == 0 {
		opts.MinRate = DefaultMinRate
	}
	if opts.RateWindow <= 0 {
		opts.RateWindow = DefaultRateWindow
	}
	h := &Handler{
		opts:      opts,
		log:       opts.Logger,
		chips:     newChipMemory(10000, opts.Logger),
		guesses:   lockout.New(nil),
		extra:     newExtraGate(opts.MaxAPI, opts.Logger),
		inflaters: &inflaters{seen: map[string]time.Time{}},
		big:       make(chan *[]byte, bigBuffers()),
		detached:  map[net.Conn]struct{}{},
		small:     sync.Pool{New: func() any { b := make([]byte, smallChunk); return &b }},
	}
	for range cap(h.big) {
		h.big <- nil // made when first lent
	}
	if h.opts.Downloads == nil {
		h.opts.Downloads = NewDownloads()
	}
	h.cat.Store(cat)
	return h
}

// SetPolicy puts a policy in force for the requests that follow.
func (h *Handler) SetPolicy(p *policy.Policy) { h.policy.Store(p) }

// Policy is the policy in force (nil for none).
func (h *Handler) Policy() *policy.Policy { return h.policy.Load() }

// Downloads are the firmware bodies in flight.
func (h *Handler) Downloads() *Downloads { return h.opts.Downloads }

// Catalog is the catalog being served now.
func (h *Handler) Catalog() *catalog.Catalog { return h.cat.Load() }

// SetCatalog replaces the catalog atomically: requests already running
// finish with the one they started with.
func (h *Handler) SetCatalog(cat *catalog.Catalog) { h.cat.Store(cat) }

// exchange is one request's record: what the log line and observers
// learn about it.
type exchange struct {
	timer    *time.Timer // sleep's, made on first use
	h        *Handler
	r        *http.Request
	facts    *device.Facts
	start    time.Time
	ev       *Exchange // built when the status is decided
	w        http.ResponseWriter
	status   int
	bytes    int64
	reason   string
	mac      string
	endpoint string
	verdict  *decide.Verdict
	running  []*catalog.Entry
	size     int64
	dl       *Download
	dv       delivery  // the connection's acknowledgements, for a download
	acked    bool      // the device acknowledged every byte written
	src      io.Closer // the open image file, closed by release
	conn     net.Conn  // the connection, once the download has left net/http (detach)
	eof      bool      // a detached download's device closed the connection (await)
	corked   bool      // the header waits in the kernel for the first body bytes (detach)

	lastDelivered atomic.Int64 // delivered(), as last measured

	// byRef says src is a file only otabox writes (a disk file's kept
	// copy, see catalog.DigestCache, or a kept --gzip form): sent by
	// reference to its pages, with no check against the catalog's file.
	byRef bool

	// redecided counts decisions taken again after the file left the
	// catalog (answer).
	redecided int

	// rangeFrom and rangeTotal place a ranged answer (206) in its image;
	// rangeTotal is 0 for a whole one.
	rangeFrom, rangeTotal int64

	// quiet logs the request at debug: a refusal already said once at
	// WARN (a locked-out address's).
	quiet bool
	// lockedFor is how long the client's address is still locked out for
	// guessing the device password (credentialed).
	lockedFor time.Duration

	// durable waits until the decision is recorded (Options.Decided);
	// nil once waited for, or when there is nothing to wait for. durableOK
	// is its answer.
	durable   func() bool
	durableOK bool
	withheld  bool // the last bytes were never sent: the decision was not durable
}

// HoldBack is how many of a download's last bytes wait until its decision
// is durable: four TCP segments of an ESP's 1,460-byte MSS and more. A
// device that has not received them cannot finish its update (the
// updaters check the length and the MD5 at the end), so until then a
// power cut can lose only the decision of a device that will ask again.
const HoldBack = 8 << 10

// awaitDurable waits for the decision's commit, once; false when it was
// not made durable.
func (x *exchange) awaitDurable() bool {
	if x.durable != nil {
		x.durableOK = x.durable()
		x.durable = nil
	}
	return x.durableOK
}

func (x *exchange) Header() http.Header { return x.w.Header() }

// WriteHeader is the moment of decision: the exchange is handed to the
// Decided observer before the status line (and so any body byte) goes out.
func (x *exchange) WriteHeader(code int) {
	if x.status == 0 {
		x.status = code
		if d := x.h.opts.Decided; d != nil && (x.endpoint == "firmware" || x.endpoint == "update") {
			x.ev = x.exchangeFor(0)
			x.ev.Committed = true
			x.durable, x.durableOK = d(x.ev), true
			if body := (code == http.StatusOK || code == http.StatusPartialContent) && x.r.Method == http.MethodGet; !body {
				x.awaitDurable() // nothing to hold back: the answer waits
			}
		}
	}
	x.w.WriteHeader(code)
}
func (x *exchange) Write(p []byte) (int, error) {
	if x.status == 0 {
		x.WriteHeader(http.StatusOK)
	}
	var n int
	var err error
	if x.conn != nil {
		n, err = x.conn.Write(p)
		x.uncork() // the header goes out with these bytes
	} else {
		n, err = x.w.Write(p)
	}
	x.count(int64(n))
	return n, err
}

// count adds n body bytes written.
func (x *exchange) count(n int64) {
	x.bytes += n
	if x.dl != nil {
		x.dl.sent.Add(n)
	}
}

// readFrom writes r's bytes as body, as Write does, but lets the
// connection take them by its own ReadFrom: a *net.TCPConn sends a file
// behind an io.LimitedReader with sendfile, its pages passed to the
// socket by reference. net/http's response does that after writing the
// header with the first 512 bytes (so an ESP32 finds 0xE9 with it), and
// the listener's connection wrappers pass it down to the socket.
func (x *exchange) readFrom(r io.Reader) (int64, error) {
	var n int64
	var err error
	if x.conn != nil {
		n, err = readFrom(x.conn, r)
		x.uncork() // the header goes out with these bytes
	} else {
		n, err = readFrom(x.w, r)
	}
	x.count(n)
	return n, err
}

// readFrom copies r to w by w's own ReadFrom when it has one.
func readFrom(w io.Writer, r io.Reader) (int64, error) {
	if rf, ok := w.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{w}, r)
}

// writerOnly hides every method but Write, so io.Copy cannot come back to
// the ReadFrom it is called from.
type writerOnly struct{ io.Writer }

func (x *exchange) Unwrap() http.ResponseWriter { return x.w }

// ServeHTTP routes without http.ServeMux: ServeMux redirects "//" and "/./"
// paths, and devices never follow redirects (spec §2.5).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if h.opts.Extra != nil && isExtra(r.URL.Path) && !strings.HasSuffix(r.Header.Get("User-Agent"), "-http-Update") {
		// People and probes; an updater asking for "/" still gets a device answer.
		h.extra.serve(h.opts.Extra, w, r)
		return
	}
	h.inflight.Add(1)
	facts, ferr := device.Parse(r.Header)
	x := &exchange{h: h, r: r, facts: facts, start: start, w: w, endpoint: "other"}
	defer func() {
		if x.conn == nil { // else the download's own goroutine ends it (detach)
			x.release()
			h.inflight.Done()
		}
	}()
	x.mac = facts.MAC()
	switch {
	case r.Header.Get(overHeader) != "":
		w.Header().Set("Connection", "close")
		h.fail(x, http.StatusRequestHeaderFieldsTooLarge, "request head of "+r.Header.Get(overHeader)+"; devices send under 1 KB")
	case len(r.RequestURI) > MaxTarget:
		h.fail(x, http.StatusRequestURITooLong, "request-target of "+strconv.Itoa(len(r.RequestURI))+" bytes; devices send under "+strconv.Itoa(MaxTarget))
	case headerLines(r.Header) > MaxHeaderLines:
		// FixTargets cuts these; a listener without it still refuses them.
		h.fail(x, http.StatusRequestHeaderFieldsTooLarge, "more than "+strconv.Itoa(MaxHeaderLines)+" header lines")
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		w.Header().Set("Allow", "GET, HEAD")
		h.fail(x, http.StatusMethodNotAllowed, "method "+r.Method+" is not served; devices use GET")
	case ferr != nil:
		h.fail(x, http.StatusBadRequest, ferr.Error())
	case h.opts.DeviceAuth.Password != "" && (r.URL.Path != CatalogPath || h.opts.DeviceAuth.Catalog) && !h.credentialed(x, r):
		x.endpoint = endpointOf(r.URL.Path, h.opts.UpdatePath, facts)
		h.refuseCredentials(x, r)
	case r.URL.Path == CatalogPath:
		x.endpoint = "catalog"
		h.serveCatalog(x, r, facts, h.cat.Load())
	case strings.HasPrefix(r.URL.Path, ManifestPrefix):
		x.endpoint = "manifest"
		h.serveManifest(x, r, h.cat.Load())
	case strings.HasPrefix(r.URL.Path, FOTAPrefix):
		x.endpoint = "manifest"
		h.serveFOTA(x, r, h.cat.Load())
	case h.opts.UpdatePath != "" && r.URL.Path == h.opts.UpdatePath:
		x.endpoint = "update"
		for cat := h.cat.Load(); h.serveUpdate(x, r, facts, cat); cat = h.cat.Load() {
		}
	default:
		x.endpoint = endpointOf(r.URL.Path, h.opts.UpdatePath, facts)
		for cat := h.cat.Load(); h.serveFile(x, r, facts, cat); cat = h.cat.Load() {
		}
	}
	if x.conn == nil {
		x.release()
		h.observe(x)
	}
}

// credentialed reports whether r carries the device credentials from an
// address not locked out for guessing them (lockout's limits, as the
// admin page's): while it is, not even the right password is tried.
func (h *Handler) credentialed(x *exchange, r *http.Request) bool {
	if x.lockedFor = h.guesses.Locked(clientIP(r)); x.lockedFor > 0 {
		return false
	}
	return h.opts.DeviceAuth.allows(r)
}

// refuseCredentials answers a request credentialed refused: 429 with
// Retry-After while its address is locked out, else 401. Only a wrong
// password counts toward a lock-out, never a missing one; the refusals of
// a locked-out address are logged at debug, its lock-out once at WARN.
func (h *Handler) refuseCredentials(x *exchange, r *http.Request) {
	ip := clientIP(r)
	if wait := x.lockedFor; wait > 0 {
		x.quiet = true
		x.Header().Set("Retry-After", strconv.Itoa(max(int(wait.Round(time.Second)/time.Second), 1)))
		h.fail(x, http.StatusTooManyRequests, "too many wrong device passwords from "+ip+"; try again in "+wait.Round(time.Second).String())
		return
	}
	x.Header().Set("WWW-Authenticate", `Basic realm="otabox"`)
	why := "device credentials required (setAuthorization)"
	if _, _, ok := r.BasicAuth(); ok {
		why = "wrong device credentials"
		if n, lock := h.guesses.Fail(ip); lock > 0 {
			h.log.Warn("device: wrong password; address locked out", "client", ip, "failures", n, "for", lock)
		}
	}
	h.fail(x, http.StatusUnauthorized, why)
}

// release closes the image file and takes the download off the list of
// running ones, once.
func (x *exchange) release() {
	if x.src != nil {
		x.src.Close()
		x.src = nil
	}
	if x.dl != nil {
		x.h.opts.Downloads.done(x.dl)
		x.dl = nil
	}
}

// observe logs the request and hands its outcome to the Observe hook.
func (h *Handler) observe(x *exchange) {
	took := time.Since(x.start)
	h.logRequest(x.r, x, took)
	ev := x.exchangeFor(took)
	if x.rangeTotal > 0 && ev.Decision == "serve" {
		// A piece of the image: the download is the image, completed by
		// whichever piece's end makes it whole (pieces), a cut-off one's
		// acknowledged bytes included.
		ev.Completed = x.r.Method == http.MethodGet && ev.Bytes > 0 &&
			h.pieces.took(clientIP(x.r), ev.Image.SHA256, x.rangeFrom, x.rangeFrom+ev.Bytes, x.rangeTotal)
	}
	if e := ev.Image; ev.Completed && x.mac != "" && e != nil && e.Image != nil {
		h.chips.completed(x.mac, e.Image.Chip)
	}
	if h.opts.Observe != nil {
		x.awaitDurable() // a download cut off before its last bytes: its decision's id
		if x.ev != nil {
			// The one the recorder saw at the decision, now with its outcome.
			x.ev.Reason, x.ev.Bytes, x.ev.Size, x.ev.Completed, x.ev.Took = ev.Reason, ev.Bytes, ev.Size, ev.Completed, took
			x.ev.Withheld = x.withheld
			ev = x.ev
		}
		h.opts.Observe(ev)
	}
}

// endpointOf names what a request is for. Only the updater asks for
// firmware: anything else (a browser, a probe, a crawler) asking for a
// file is answered the same way but never counted as a device's firmware
// request.
func endpointOf(path, updatePath string, facts *device.Facts) string {
	switch {
	case path == CatalogPath:
		return "catalog"
	case updatePath != "" && path == updatePath:
		return "update"
	case !facts.Downloads():
		return "other"
	}
	return "firmware"
}

// headerLines counts a head's header lines, duplicates included.
func headerLines(h http.Header) int {
	n := 0
	for _, v := range h {
		n += len(v)
	}
	return n
}

// isExtra tells the status page's paths from firmware names.
func isExtra(p string) bool {
	return p == "/" || p == "/metrics" || p == "/healthz" || p == "/favicon.ico" || p == "/station" || p == "/api" || strings.HasPrefix(p, "/api/") || strings.HasPrefix(p, "/admin/")
}

func (x *exchange) exchangeFor(took time.Duration) *Exchange {
	ev := &Exchange{
		Time: x.start, Client: clientIP(x.r), Method: x.r.Method, Endpoint: x.endpoint, Target: x.r.RequestURI, Device: x.facts,
		Running: x.running, Status: x.status, Reason: x.reason, Bytes: x.bytes, Size: x.size, Took: took,
	}
	switch {
	case x.verdict != nil && x.verdict.Action == decide.Version:
		ev.Decision = "version" // headers only: never a download
	case x.verdict != nil && x.verdict.Action == decide.TooLarge:
		ev.Decision = "refuse" // headers only: the device's own check refuses it
	case (x.status == http.StatusOK || x.status == http.StatusPartialContent) && x.endpoint != "catalog":
		ev.Decision = "serve"
		ev.Bytes = x.sentBytes()
		ev.Completed = x.r.Method == http.MethodGet && x.size > 0 && ev.Bytes == x.size && (x.dv.raw == nil || x.acked)
		if x.rangeTotal > 0 {
			ev.Size = x.rangeTotal // a piece of this image (observe tells whether it made it whole)
		}
	case x.status == http.StatusOK:
		ev.Decision = "list"
	case x.status == http.StatusNotModified:
		ev.Decision = "no-update"
	case x.status >= 500:
		ev.Decision = "error"
	default:
		ev.Decision = "refuse"
	}
	if x.verdict != nil {
		ev.Image, ev.Batch = x.verdict.Entry, x.verdict.Batch
	}
	return ev
}

func (h *Handler) logRequest(r *http.Request, x *exchange, d time.Duration) {
	level := slog.LevelInfo
	switch {
	case x.quiet:
		level = slog.LevelDebug
	case x.status >= 400:
		level = slog.LevelWarn
	}
	if !h.log.Enabled(r.Context(), level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("client", r.RemoteAddr),
		slog.String("method", r.Method),
		slog.String("target", r.RequestURI),
		slog.Int("status", x.status),
		slog.Int64("bytes", x.sentBytes()),
		slog.Duration("took", d.Round(time.Microsecond)),
	}
	if x.mac != "" {
		attrs = append(attrs, slog.String("mac", x.mac))
	}
	if x.reason != "" {
		attrs = append(attrs, slog.String("reason", x.reason))
	}
	h.log.LogAttrs(r.Context(), level, "request", attrs...)
}

// fail answers a refusal: the status, and the one-line reason both as a
// header (devices ignore bodies on non-200 answers) and as the body.
func (h *Handler) fail(x *exchange, status int, reason string) {
	x.reason = reason
	hd := x.Header()
	hd.Set("X-Otabox-Reason", reason)
	if status == http.StatusNotModified {
		x.WriteHeader(status)
		return
	}
	if x.facts != nil && x.facts.AsksVersion() {
		// getAvailableVersion reads headers only: a version query is
		// never answered with a body, a refusal included.
		hd["Content-Length"] = []string{"0"}
		x.WriteHeader(status)
		return
	}
	body := reason + "\n"
	hd.Set("Content-Type", "text/plain; charset=utf-8")
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	x.WriteHeader(status)
	io.WriteString(x, body)
}

func (h *Handler) serveCatalog(x *exchange, r *http.Request, facts *device.Facts, cat *catalog.Catalog) {
	op, path, err := catalogQuery(r.URL.RawQuery)
	if err != nil {
		h.fail(x, http.StatusBadRequest, "malformed catalog query: "+err.Error())
		return
	}
	switch op {
	case "list":
	case "":
		h.fail(x, http.StatusBadRequest, "catalog request without op; use op=list")
		return
	default:
		h.fail(x, http.StatusBadRequest, "unknown catalog operation "+strconv.Quote(op)+"; use op=list")
		return
	}
	p, err := catalog.Clean(path)
	if err != nil {
		h.fail(x, http.StatusBadRequest, "catalog path "+strconv.Quote(path)+": "+err.Error())
		return
	}
	dir, ok := cat.Dir(p)
	if !ok {
		if _, isFile := cat.File(p); isFile {
			h.fail(x, http.StatusNotFound, "catalog path "+strconv.Quote(p)+" is a file, not a folder")
		} else {
			h.fail(x, http.StatusNotFound, "no folder "+strconv.Quote(p)+" in the catalog")
		}
		return
	}
	fam := espimage.FamilyUnknown
	if facts.Client == device.CatalogClient {
		fam = facts.Family // the device sees as "bin" only what it can run
		if fam == espimage.ESP8266 {
			h.inflaters.note(clientIP(r), inflatesGzip(HeadOrder(r.Context())))
		}
	}
	body := dir.JSON(fam)
	hd := x.Header()
	// Canonical keys set directly: Set would canonicalize them again on
	// every listing.
	hd["Content-Type"] = []string{"application/json"}
	// Always an explicit length: AutoConnect reads the raw stream and
	// would parse chunk framing as JSON (spec §2.6).
	hd["Content-Length"] = []string{strconv.Itoa(len(body))}
	x.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		x.Write(body)
	}
}

// catalogQuery returns the first op and path of a catalog query and the
// error url.ParseQuery would return for it (FuzzCatalogQuery), without
// the map of every parameter ParseQuery builds: a catalog request only
// reads these two. A query of more than 64 parameters (devices send 2) is
// left to ParseQuery, for its limit on them.
func catalogQuery(raw string) (op, path string, err error) {
	if strings.Count(raw, "&") >= 64 {
		q, err := url.ParseQuery(raw)
		return q.Get("op"), q.Get("path"), err
	}
	var haveOp, havePath bool
	for raw != "" {
		var part string
		part, raw, _ = strings.Cut(raw, "&")
		if strings.Contains(part, ";") {
			err = errors.New("invalid semicolon separator in query") // as ParseQuery: this error replaces any before it
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		k, err1 := url.QueryUnescape(k)
		if err1 == nil {
			v, err1 = url.QueryUnescape(v)
		}
		if err1 != nil {
			if err == nil {
				err = err1
			}
			continue
		}
		switch {
		case k == "op" && !haveOp:
			op, haveOp = v, true
		case k == "path" && !havePath:
			path, havePath = v, true
		}
	}
	return op, path, err
}

// serveFile and serveUpdate answer from one catalog; they report true,
// having written nothing, when the entry they chose left with that catalog
// (see answer), and ServeHTTP asks the current one.
func (h *Handler) serveFile(x *exchange, r *http.Request, facts *device.Facts, cat *catalog.Catalog) (again bool) {
	if raw := strings.ToLower(r.URL.EscapedPath()); strings.Contains(raw, "%2f") || strings.Contains(raw, "%5c") {
		h.fail(x, http.StatusBadRequest, "path "+strconv.Quote(r.URL.EscapedPath())+": an encoded / or \\ inside a path element names nothing")
		return false
	}
	p, err := catalog.Clean(r.URL.Path)
	if err != nil {
		h.fail(x, http.StatusBadRequest, "path "+strconv.Quote(r.URL.Path)+": "+err.Error())
		return false
	}
	e, ok := cat.File(p)
	if !ok {
		if _, isDir := cat.Dir(p); isDir {
			h.fail(x, http.StatusNotFound, strconv.Quote("/"+p)+" is a folder, not a file")
		} else if cat.Pending(p) {
			// Never a wrong digest: the file is there but not hashed yet.
			files, bytes := cat.PendingCount()
			x.Header().Set("Retry-After", "5")
			h.fail(x, http.StatusServiceUnavailable, fmt.Sprintf("%s is still being read and hashed (%d files, %d MB to go); retry shortly", p, files, bytes>>20))
		} else {
			h.fail(x, http.StatusNotFound, "no file "+strconv.Quote(p)+" in the catalog")
		}
		return false
	}
	return h.answer(x, r, h.decide(x, cat, clientIP(r), decide.Request{Entry: e, Device: facts}, decide.Firmware))
}

func (h *Handler) serveUpdate(x *exchange, r *http.Request, facts *device.Facts, cat *catalog.Catalog) (again bool) {
	req := decide.Request{Device: facts}
	if h.opts.Batch != nil && facts.Client == device.Updater && facts.MAC() != "" {
		req.Batch = h.opts.Batch(facts)
	}
	v := h.decide(x, cat, clientIP(r), req, func(req decide.Request) decide.Verdict {
		return decide.Newest(req, cat.Files())
	})
	return h.answer(x, r, v)
}

// decide fills in what the catalog and memory know about the device's
// running image, then asks the decision function.
func (h *Handler) decide(x *exchange, cat *catalog.Catalog, ip string, req decide.Request, f func(decide.Request) decide.Verdict) decide.Verdict {
	facts := req.Device
	for _, dg := range []string{facts.SketchMD5, facts.SketchSHA256} {
		if dg != "" {
			req.Running = appendNew(req.Running, cat.Running(dg))
		}
	}
	mac := facts.MAC()
	if chip, ok := decide.RunningChip(req); ok && mac != "" && len(req.Running) > 0 {
		h.chips.claim(mac, ip, chip)
	}
	req.Chip, req.ChipKnown = h.chips.lookup(mac)
	req.Inflates = facts.Family == espimage.ESP8266 && h.inflaters.known(ip)
	x.running = req.Running
	req.Policy = h.policy.Load()
	req.Now = time.Now()
	req.Pending = cat.Pending
	req.File = cat.File
	if h.opts.Record != nil && mac != "" && facts.Client == device.Updater {
		rec := h.opts.Record(facts)
		req.Hold, req.Filesystem = rec.Hold, rec.Filesystem
	}
	return f(req)
}

func appendNew(dst, src []*catalog.Entry) []*catalog.Entry {
next:
	for _, e := range src {
		for _, d := range dst {
			if d == e {
				continue next
			}
		}
		dst = append(dst, e)
	}
	return dst
}

// answer writes the verdict. Before anything is written it reports true
// when the chosen file left the catalog while the request was decided (a
// reload released it); the caller then decides again on the current
// catalog, up to maxRedecide times, before the device is told to retry.
func (h *Handler) answer(x *exchange, r *http.Request, v decide.Verdict) (again bool) {
	x.verdict = &v
	if v.Action == decide.Version {
		// getAvailableVersion reads these two headers and ignores any body.
		x.reason = v.Reason
		hd := x.Header()
		hd["x-version"] = []string{v.Entry.Image.Version}
		hd["x-MD5"] = []string{v.Entry.MD5}
		hd["Content-Length"] = []string{"0"}
		x.WriteHeader(http.StatusOK)
		return false
	}
	if v.Action == decide.TooLarge {
		// The length the device compares with its free space, and no
		// body: the connection closes (fewer bytes than declared).
		x.reason = v.Reason
		hd := x.Header()
		hd["Content-Type"] = []string{"application/octet-stream"}
		hd["Content-Length"] = []string{strconv.FormatInt(v.Entry.Size, 10)}
		hd["x-MD5"] = []string{v.Entry.MD5}
		hd["X-Otabox-Reason"] = []string{v.Reason}
		hd["Connection"] = []string{"close"}
		x.WriteHeader(http.StatusOK)
		return false
	}
	if v.Action != decide.Serve {
		if v.RetryAfter > 0 {
			x.Header().Set("Retry-After", strconv.Itoa(v.RetryAfter))
		}
		h.fail(x, v.Status, v.Reason)
		return false
	}
	e := v.Entry
	size, md5, sha, data := e.Size, e.MD5, e.SHA256, e.Bytes()
	var src io.ReadCloser
	switch {
	case v.Gzip:
		// The compressed image is the file itself (never Content-Encoding);
		// length and digests are the compressed bytes' (spec §2.4).
		size, md5, sha, data = e.Gzip.Size, e.Gzip.MD5, e.Gzip.SHA256, e.Gzip.Bytes()
		x.reason = "gzip-compressed for a core 2.7+ device, " + strconv.FormatInt(e.Size-e.Gzip.Size, 10) + " bytes saved"
		if data == nil { // kept in the data dir's gzip/, only ever replaced whole
			var err error
			if src, err = e.Gzip.Open(); err != nil {
				x.Header().Set("Retry-After", "2")
				h.fail(x, http.StatusServiceUnavailable, e.Path+": its compressed form cannot be read ("+err.Error()+"); retry")
				return false
			}
			x.src, x.byRef = src, true
		}
	case data == nil:
		if e.Changed() {
			// Modified in place since it was hashed: the watcher re-reads
			// it; never start a download of bytes nobody announced.
			x.Header().Set("Retry-After", "2")
			h.fail(x, http.StatusServiceUnavailable, e.Path+" changed on disk and is being read again; retry")
			return false
		}
		if f, ok := e.OpenCopy(); ok {
			// The bytes hashed, in a file only otabox writes: the
			// download runs to its end whatever happens to e's file.
			x.src, x.byRef, src = f, true, f
			break
		}
		var err error
		if src, err = e.Open(); err != nil {
			if errors.Is(err, catalog.ErrRetired) && x.redecided < maxRedecide {
				x.redecided++
				return true
			}
			x.Header().Set("Retry-After", "1")
			h.fail(x, http.StatusServiceUnavailable, e.Path+": "+err.Error()+"; retry")
			return false
		}
		x.src = src
	}
	status, total := http.StatusOK, size
	if spec := r.Header.Get("Range"); spec != "" && r.Method == http.MethodGet && (r.Header.Get("If-Range") == "" || r.Header.Get("If-Range") == etag(md5)) {
		rg, err := parseRange(spec, size)
		if err != nil {
			x.Header().Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
			h.fail(x, http.StatusRequestedRangeNotSatisfiable, err.Error())
			return false
		}
		if data != nil {
			data = data[rg.start : rg.start+rg.length]
		} else if err := skip(src, rg.start); err != nil {
			x.Header().Set("Retry-After", "1")
			h.fail(x, http.StatusServiceUnavailable, e.Path+": "+err.Error()+"; retry")
			return false
		}
		status, size = http.StatusPartialContent, rg.length
		x.rangeFrom, x.rangeTotal = rg.start, total
		x.Header()["Content-Range"] = []string{fmt.Sprintf("bytes %d-%d/%d", rg.start, rg.start+rg.length-1, total)}
	}
	max := 0
	if p := h.policy.Load(); p != nil {
		max = p.MaxDownloads
	}
	x.dv = deliveryFor(r.Context())
	dl, running := h.opts.Downloads.start(clientIP(r), x.mac, e.Path, size, max, x.dv)
	if dl == nil {
		x.Header().Set("Retry-After", "30")
		h.fail(x, http.StatusServiceUnavailable, fmt.Sprintf("%d downloads are running, the policy allows %d at once; retry later", running, max))
		return false
	}
	x.dl = dl
	x.size = size
	hd := x.Header()
	// Set as written: the reference's header names, byte for byte.
	hd["Content-Type"] = []string{"application/octet-stream"}
	hd["Content-Disposition"] = []string{"attachment; filename=" + e.Name}
	hd["Content-Length"] = []string{strconv.FormatInt(size, 10)}
	hd["x-MD5"] = []string{md5}
	hd["x-SHA256"] = []string{sha}
	if x.facts.Headerless() {
		// What a client that resumes needs; the Arduino updaters' answers
		// stay as the reference server's.
		hd["Accept-Ranges"] = []string{"bytes"}
		hd["ETag"] = []string{etag(md5)}
	}
	x.WriteHeader(status)
	if r.Method != http.MethodGet {
		return false
	}
	if h.detach(x, r) {
		go h.stream(x, data, src, e)
		return false
	}
	// No Flush before the first body bytes: an ESP32 peeks for 0xE9 100 ms
	// after the header and fails if it has not arrived (spec §2.3).
	h.send(x, data, src, e)
	return false
}

// etag is an image's validator for If-Range: its MD5, strong.
func etag(md5 string) string { return `"` + md5 + `"` }

// skip moves src n bytes on: by Seek where it can, else by reading.
func skip(src io.Reader, n int64) error {
	if n == 0 {
		return nil
	}
	if s, ok := src.(io.Seeker); ok {
		_, err := s.Seek(n, io.SeekStart)
		return err
	}
	_, err := io.CopyN(io.Discard, src, n)
	return err
}

// ManifestPrefix is where ESPHome's update platform http_request finds
// its manifests: ManifestPrefix+"image/<catalog path>.json" for one image,
// ManifestPrefix+"project/<project>.json" for a project's newest release.
const ManifestPrefix = "/esphome/"

// FOTAPrefix is where esp32FOTA finds its manifests:
// FOTAPrefix+"<project>.json", with ?chip=<chip> for a project built for
// several ESP32 chips.
const FOTAPrefix = "/esp32fota/"

// serveFOTA answers an esp32FOTA manifest, rendered from cat, naming this
// box as the request's Host header does.
func (h *Handler) serveFOTA(x *exchange, r *http.Request, cat *catalog.Catalog) {
	project, ok := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, FOTAPrefix), ".json")
	if !ok || project == "" || strings.Contains(project, "/") {
		h.fail(x, http.StatusNotFound, "no such manifest: ask "+FOTAPrefix+"<project>.json")
		return
	}
	host, port := r.Host, 80
	if hp, p, err := net.SplitHostPort(r.Host); err == nil {
		if n, err := strconv.Atoi(p); err == nil && n > 0 && n < 65536 {
			host, port = hp, n
		}
	}
	if host == "" {
		h.fail(x, http.StatusBadRequest, "the request has no Host header, which the manifest needs to name this box")
		return
	}
	m, err := manifest.ForFOTA(project, r.URL.Query().Get("chip"), cat.Files(), host, port)
	if err != nil {
		h.fail(x, http.StatusNotFound, err.Error())
		return
	}
	h.writeJSON(x, r, m.JSON())
}

// writeJSON answers a manifest.
func (h *Handler) writeJSON(x *exchange, r *http.Request, body []byte) {
	hd := x.Header()
	hd["Content-Type"] = []string{"application/json"}
	hd["Content-Length"] = []string{strconv.Itoa(len(body))}
	hd["Cache-Control"] = []string{"no-store"}
	x.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		x.Write(body)
	}
}

// serveManifest answers an ESPHome manifest, rendered from cat.
func (h *Handler) serveManifest(x *exchange, r *http.Request, cat *catalog.Catalog) {
	rest, ok := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, ManifestPrefix), ".json")
	kind, name, _ := strings.Cut(rest, "/")
	var m manifest.ESPHome
	var err error
	switch {
	case !ok || name == "":
		err = errors.New("no such manifest: ask " + ManifestPrefix + "image/<catalog path>.json or " + ManifestPrefix + "project/<project>.json")
	case kind == "image":
		var p string
		if p, err = catalog.Clean(name); err == nil {
			if e, found := cat.File(p); found {
				m, err = manifest.ForImage(e)
			} else {
				err = errors.New("no file " + strconv.Quote(p) + " in the catalog")
			}
		}
	case kind == "project":
		m, err = manifest.ForProject(name, cat.Files())
	default:
		err = errors.New("no such manifest kind " + strconv.Quote(kind) + ": image or project")
	}
	if err != nil {
		h.fail(x, http.StatusNotFound, err.Error())
		return
	}
	h.writeJSON(x, r, m.JSON())
}

// maxRedecide bounds how often one request is decided again because its
// file left the catalog meanwhile: each time needs a catalog published in
// between, so a third means a folder rewritten faster than it is read.
const maxRedecide = 3

// send streams the body and notes why a download was cut off.
func (h *Handler) send(x *exchange, data []byte, src io.Reader, e *catalog.Entry) {
	if err := h.sendBody(x, data, src, e); err != nil {
		x.reason = "download cut off after " + strconv.FormatInt(x.delivered(), 10) + " bytes: " + err.Error()
	}
}

// sendChunk is how much of an image goes into one write. A write to a
// device that reads slowly blocks until the socket takes it all, so a
// chunk must fit the --min-rate window many times over; 16 KB is 8 s at
// the default minimum.
const sendChunk = 16 << 10

// maxChunk bounds one write when the socket has room for more (a fast
// client): fewer system calls, and still no blocking. smallChunk is the
// write for a socket with little room (see chunkFor).
const (
	maxChunk   = 256 << 10
	smallChunk = 4 << 10
)

// bigBuffers is how many maxChunk buffers exist: a few per CPU, enough
// for every write that can run at once. A thousand devices whose sockets
// all have room at the start of a fleet update (their first window) then
// share 2 MB on two cores instead of each taking 256 KB from a pool
// (36 MB measured at the peak), and a write that finds none free goes
// out in smallChunk pieces meanwhile.
func bigBuffers() int { return 4 * runtime.GOMAXPROCS(0) }

// lend returns a buffer for a write of up to n bytes: a maxChunk one when
// n needs more than smallChunk and one is free, else a smallChunk one;
// the write is cut to its length. giveBack returns it.
func (h *Handler) lend(n int64) *[]byte {
	if n > smallChunk {
		select {
		case b := <-h.big:
			if b == nil {
				b = new(make([]byte, maxChunk))
			}
			return b
		default:
		}
	}
	return h.small.Get().(*[]byte)
}

func (h *Handler) giveBack(b *[]byte) {
	if len(*b) == maxChunk {
		h.big <- b
		return
	}
	h.small.Put(b)
}

// chunkFor is the next write's size, given the room the socket has now
// (known false: the kernel cannot tell; sendChunk then): at least
// smallChunk (sendBody waits for that much room: an ESP8266's TCP window
// is 5,840 bytes, so its socket frees a few KB at a time), at most limit,
// so that the write does not block.
func chunkFor(room int, known bool, limit int) int {
	if !known {
		return sendChunk
	}
	return min(max(room, smallChunk), limit)
}

// sendBody streams an image — straight from data when the catalog holds
// it in memory, by reference from a kept copy (x.byRef), else read from
// src chunk by chunk — and returns once the device has acknowledged every
// byte (where the kernel can tell), so that "completed" means the device
// has it. A device whose delivery averages under MinRate over RateWindow
// is cut off, and so is one that stops acknowledging, and so is a
// download read from a catalog file that is modified in place meanwhile
// (rather than send it mixed bytes).
func (h *Handler) sendBody(x *exchange, data []byte, src io.Reader, e *catalog.Entry) error {
	p := newPacer(h.opts.MinRate, h.opts.RateWindow, time.Now())
	// upTo is where the body stops until the decision is durable: its
	// last HoldBack bytes wait for the commit (Options.Decided).
	upTo := x.size
	if x.durable != nil {
		upTo = max(x.size-HoldBack, 0)
	}
	// send writes the next chunk, sized by the socket's room (see
	// chunkFor) and never past upTo, and reports the end.
	send := func(room int, known bool) (bool, error) {
		n := min(len(data), chunkFor(room, known, maxChunk), int(upTo-x.bytes))
		_, err := x.Write(data[:n])
		data = data[n:]
		return len(data) == 0, err
	}
	if src != nil && x.byRef {
		// A kept copy: sent by reference (sendfile), in pieces as large
		// as the socket takes at once; no buffer is involved, so a fast
		// client takes the whole room in one call.
		send = func(room int, known bool) (bool, error) {
			n := min(int64(chunkFor(room, known, math.MaxInt)), upTo-x.bytes)
			k, err := x.readFrom(&io.LimitedReader{R: src, N: n})
			if err != nil || k < n {
				return true, err // short: the truncation is reported below
			}
			return x.bytes >= x.size, nil
		}
	} else if src != nil {
		// The catalog's own file (no kept copy): read, check, write, chunk
		// by chunk, each read checked against the file's stamp before it
		// is written, so that nothing rewritten in place ever reaches the
		// device. (sendfile from it would queue references to the page
		// cache, which a write changes under them until the device has
		// read them: measured, it let mixed downloads complete over
		// loopback; hence the copies.) Chunks are as large as
		// the socket takes at once (chunkFor); the buffer is lent (lend)
		// and held only for the one write.
		errChanged := errors.New(e.Path + " was modified on disk during the download")
		send = func(room int, known bool) (bool, error) {
			if e.Changed() {
				return true, errChanged
			}
			n := min(int64(chunkFor(room, known, maxChunk)), upTo-x.bytes)
			b := h.lend(n)
			defer h.giveBack(b)
			k, err := io.ReadFull(src, (*b)[:min(n, int64(len(*b)))])
			if e.Changed() {
				return true, errChanged
			}
			if _, werr := x.Write((*b)[:k]); werr != nil {
				return true, werr
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return true, nil
			}
			return x.bytes >= x.size, err
		}
	}
	var checked time.Time
	for last := x.size == 0; !last; {
		if x.bytes >= upTo && upTo < x.size {
			// The last bytes: only once the decision is durable.
			if !x.awaitDurable() {
				x.withheld = true
				return fmt.Errorf("its decision could not be recorded, so the last %d bytes are withheld: no device completes an image the fleet record does not hold (it will ask again)", x.size-x.bytes)
			}
			upTo = x.size
		}
		// Once a second: the rate, and a fresh deadline for the writes.
		if now := time.Now(); now.Sub(checked) >= time.Second {
			checked = now
			d, queued := x.progress()
			if err := p.check(now, d, queued); err != nil {
				return err
			}
			if err := x.setWriteDeadline(now.Add(h.writeWait())); err != nil && !errors.Is(err, http.ErrNotSupported) {
				return err
			}
		}
		// Wait for room in the socket rather than block in a write: a
		// thousand slow devices then hold no buffers and no deep stacks,
		// and the wait measures delivery (for --min-rate and the status
		// page). It polls from 50 µs, doubling, up to the time the
		// device's own pace needs to make room.
		var room int
		var known bool
		for wait := 50 * time.Microsecond; ; wait = min(2*wait, time.Second) {
			if room, known = x.dv.room(); !known || room >= smallChunk {
				break
			}
			d, queued := x.progress()
			if err := p.check(time.Now(), d, queued); err != nil {
				return err
			}
			if !x.sleep(min(wait, p.until(smallChunk-room))) {
				return errors.New("the device closed the connection")
			}
		}
		var err error
		if last, err = send(room, known); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && h.opts.MinRate > 0 {
				// Blocked for the whole window: net/http has given up on
				// the connection; say why in the device's terms.
				return p.stalled(time.Now(), x.delivered())
			}
			return err
		}
	}
	if x.bytes < x.size {
		return fmt.Errorf("%s ended after %d of %d bytes: the file was truncated on disk", e.Path, x.bytes, x.size)
	}
	if err := x.flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	// Everything is written; wait for the device to acknowledge it.
	return x.drain(p)
}

// drain waits until the device has acknowledged every byte of the
// response (where the kernel can tell; a device that closes has, with its
// FIN). It looks again after the time the device, at the pace it takes
// the queue down, needs for what is left: a client on a fast link is
// seen done within tens of microseconds of its last ACK (a doubling poll
// overshot by up to its last step, which, with the record's commits,
// was a third of a loopback download's time), a thousand slow devices
// are looked at about once a second each. From 50 µs, at most 1 s; when
// the queue has not moved, twice the last wait.
func (x *exchange) drain(p *pacer) error {
	wait := 50 * time.Microsecond
	var lastQ int
	var lastT time.Time
	for {
		q, ok := x.dv.unacked()
		if !ok || q == 0 {
			x.acked = ok
			return nil
		}
		now := time.Now()
		switch {
		case lastT.IsZero():
		case q < lastQ: // the device's pace: (lastQ-q) bytes in now-lastT
			wait = time.Duration(float64(q) * float64(now.Sub(lastT)) / float64(lastQ-q))
			wait = min(max(wait, 50*time.Microsecond), time.Second)
		default:
			wait = min(2*wait, time.Second)
		}
		lastQ, lastT = q, now
		d, queued := x.progress()
		if err := p.check(now, d, queued); err != nil {
			return err
		}
		if x.gone() {
			// The device closed: its FIN acknowledges what it received.
			if q, ok := x.dv.unacked(); ok && q > 0 {
				return errors.New("the connection closed before the device acknowledged the last " + strconv.Itoa(q) + " bytes")
			}
			x.acked = true
			return nil
		}
		x.sleep(wait) // false when closed: answered above
	}
}

// sleep waits d on the exchange's one timer; false when the device closed
// the connection first. A thousand slow devices polling their queues
// allocate nothing per wait.
func (x *exchange) sleep(d time.Duration) bool {
	if x.conn != nil {
		return x.await(d)
	}
	if x.timer == nil {
		x.timer = time.NewTimer(d)
	} else {
		x.timer.Reset(d)
	}
	select {
	case <-x.r.Context().Done():
		x.timer.Stop()
		return false
	case <-x.timer.C:
		return true
	}
}

// await is a detached download's sleep: it reads the connection for d,
// as net/http's background read would, so that the device's FIN or reset
// ends the wait at once (whatever it sends meanwhile is dropped).
func (x *exchange) await(d time.Duration) bool {
	if x.eof {
		return false
	}
	x.conn.SetReadDeadline(time.Now().Add(d))
	var b [64]byte
	for {
		_, err := x.conn.Read(b[:])
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			return true
		default: // EOF, a reset, or closed by CutOff
			x.eof = true
			return false
		}
	}
}

// gone reports whether the device has closed the connection: net/http
// cancels the request's context when its background read sees the end;
// a detached download's await sees it.
func (x *exchange) gone() bool {
	if x.conn != nil {
		return x.eof
	}
	select {
	case <-x.r.Context().Done():
		return true
	default:
		return false
	}
}

// setWriteDeadline bounds the writes that follow.
func (x *exchange) setWriteDeadline(t time.Time) error {
	if x.conn != nil {
		return x.conn.SetWriteDeadline(t)
	}
	return http.NewResponseController(x.w).SetWriteDeadline(t)
}

// flush sends what net/http holds back; a detached download writes
// straight to its connection, and releases a header still held (detach).
func (x *exchange) flush() error {
	if x.conn != nil {
		x.uncork() // an empty body: the header goes alone
		return nil
	}
	return http.NewResponseController(x.w).Flush()
}

// writeWait bounds the writes of one second: the --min-rate window, or
// StallTimeout when no minimum is enforced.
func (h *Handler) writeWait() time.Duration {
	if h.opts.MinRate > 0 {
		return h.opts.RateWindow
	}
	return h.opts.StallTimeout
}

// sentBytes is what the response delivered: for a download the bytes the
// device acknowledged, else the bytes written.
func (x *exchange) sentBytes() int64 {
	if x.dv.raw != nil && !x.acked {
		return x.delivered()
	}
	return x.bytes
}

// progress is delivered() and whether the socket still holds bytes the
// device has not acknowledged (true where the kernel cannot tell): the
// pacer charges the device only for time when it does.
func (x *exchange) progress() (int64, bool) {
	if x.dv.raw == nil {
		return x.bytes, true
	}
	q, ok := x.dv.unacked()
	if !ok {
		return x.lastDelivered.Load(), true
	}
	d := max(x.bytes-int64(q), 0)
	x.lastDelivered.Store(d)
	return d, q > 0
}

// delivered is how many body bytes the device has acknowledged: bytes
// written less the socket's unacknowledged queue (the header goes first,
// so the queue never holds body bytes the device has). Once the socket is
// gone, the last measure; where the kernel cannot tell, bytes written.
func (x *exchange) delivered() int64 {
	if x.dv.raw == nil {
		return x.bytes
	}
	if q, ok := x.dv.unacked(); ok {
		x.lastDelivered.Store(max(x.bytes-int64(q), 0))
	}
	return x.lastDelivered.Load()
}

// inflaters remembers, by client address, ESP8266 devices whose catalog
// request came from core 2.7 or later, the first able to inflate gzip
// images. The firmware GET follows the catalog request from the same
// address within seconds; an entry is trusted for 15 minutes.
type inflaters struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

const inflaterTTL = 15 * time.Minute

func (f *inflaters) note(ip string, yes bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !yes {
		delete(f.seen, ip)
		return
	}
	if len(f.seen) > 10000 { // forget the stale ones before growing
		for k, t := range f.seen {
			if time.Since(t) > inflaterTTL {
				delete(f.seen, k)
			}
		}
	}
	f.seen[ip] = time.Now()
}

func (f *inflaters) known(ip string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.seen[ip]
	return ok && time.Since(t) < inflaterTTL
}

// inflatesGzip recognises the ESP8266 core 2.7+ catalog request: its
// HTTPClient sends Accept-Encoding before Connection; earlier cores send
// Connection first (spec §1.1).
func inflatesGzip(order []string) bool {
	ae, conn := -1, -1
	for i, n := range order {
		switch n {
		case "accept-encoding":
			ae = i
		case "connection":
			conn = i
		}
	}
	return ae >= 0 && conn >= 0 && ae < conn
}

// clientIP is the request's peer address without the port.
func clientIP(r *http.Request) string { return hostOf(r.RemoteAddr) }

// chipMemory remembers the chip of each ESP32, so that a device that
// later runs an image the catalog does not know is still kept from
// wrong-chip images. A MAC and a running digest are only claims (any LAN
// client can send a victim's), so a chip is learnt only from evidence a
// single request cannot give: a completed download of an image for it,
// or the same claim twice in a row from the same address. What is learnt
// is never overwritten (a chip's MAC is burnt into its eFuses): a
// conflicting claim is logged, at most once a minute with a count.
// Bounded: past max devices it learns no more.
type chipMemory struct {
	log *slog.Logger
	mu  sync.Mutex
	max int
	m   map[string]espimage.Chip
	// claims are the last unconfirmed claim per MAC.
	claims map[string]chipClaim
	// conflicts, said once a minute.
	conflicts lograte.Gate
}

type chipClaim struct {
	chip espimage.Chip
	ip   string
}

func newChipMemory(max int, log *slog.Logger) *chipMemory {
	return &chipMemory{log: log, max: max, m: map[string]espimage.Chip{}, claims: map[string]chipClaim{}}
}

// claim notes that a request from ip says mac runs a chip's image: learnt
// when the previous claim for mac was the same, from the same address.
func (c *chipMemory) claim(mac, ip string, chip espimage.Chip) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.known(mac, chip, "a request from "+ip) {
		return
	}
	if prev, ok := c.claims[mac]; ok && prev == (chipClaim{chip, ip}) {
		delete(c.claims, mac)
		c.m[mac] = chip
		return
	}
	if _, ok := c.claims[mac]; ok || len(c.claims) < c.max {
		c.claims[mac] = chipClaim{chip, ip}
	}
}

// completed notes that mac took a whole image built for chip: learnt.
func (c *chipMemory) completed(mac string, chip espimage.Chip) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.known(mac, chip, "a completed download") {
		return
	}
	delete(c.claims, mac)
	c.m[mac] = chip
}

// known reports whether mac's chip is already learnt (or cannot be, the
// memory being full), logging a conflict with chip from source. Called
// with mu held.
func (c *chipMemory) known(mac string, chip espimage.Chip, source string) bool {
	have, ok := c.m[mac]
	if !ok {
		return len(c.m) >= c.max
	}
	if have != chip {
		if n, due := c.conflicts.Note(time.Now()); due {
			c.log.Warn("device chip: a claim conflicts with what was learnt; kept what was learnt", "mac", mac, "learnt", have.String(), "claimed", chip.String(), "from", source, "conflicts_since_last_warning", n)
		}
	}
	return true
}

func (c *chipMemory) lookup(mac string) (espimage.Chip, bool) {
	if mac == "" {
		return 0, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	chip, ok := c.m[mac]
	return chip, ok
}

// Server returns an http.Server for h with the limits a device-facing
// server needs: a bound on header time and size, idle keep-alive reaping,
// and no whole-response WriteTimeout (downloads are paced per write).
func Server(h http.Handler, log *slog.Logger) *http.Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		// Each request's writes get a minute from its head; a download
		// renews its own deadline as it goes (sendBody), the status page
		// and API shorten theirs (extraGate).
		WriteTimeout:   extraWriteMax,
		MaxHeaderBytes: MaxHeadBytes + 1024, // FixTargets cuts at MaxHeadBytes; this bounds a request line
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ConnContext:    connContext,
	}
}

// Listen opens a TCP listener on addr that accepts the devices' relative
// request-targets and enforces lim; set the server's ConnState to the
// returned Limiter's.
func Listen(addr string, lim Limits, log *slog.Logger) (net.Listener, *Limiter, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	limiter := NewLimiter(l, lim, log)
	return FixTargets(limiter), limiter, nil
}
