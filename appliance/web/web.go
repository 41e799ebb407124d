// Package web is otabox's status page and JSON API for the technician on
// site: what is in the catalog, which devices checked in and what they
// run, which downloads are running, and the address devices should use.
// One server-rendered page (html/template, assets embedded, no build
// step, no external requests) whose live part (counts, downloads,
// devices, catalog, batches) it renders again at /api/live, which the
// page polls and swaps in. Behind the admin password it also takes a
// technician's actions (admin.go); otherwise it observes and decides
// nothing.
package web

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"time"

	"otabox/appliance/catalog"
	"otabox/appliance/discovery"
	"otabox/appliance/httpapi"
	"otabox/appliance/replica"
	"otabox/appliance/store"
)

//go:embed assets/status.html assets/station.html
var assets embed.FS

// Sources are the live views the page shows.
type Sources struct {
	Version string
	BindIP  net.IP // the address listened on; unspecified means every interface
	Port    int
	Path    string // the catalog path devices should use
	Catalog func() *catalog.Catalog
	Store   *store.Store // nil without a data dir
	Policy  func() PolicyView
	// EmptyHelp says how to add firmware, shown while the catalog has none.
	EmptyHelp string
	// Folder says why the --catalog folder cannot be read now ("" when it
	// can, or nil for the embedded catalog): a banner.
	Folder func() string
	// Samples says the catalog is the repository's sample images, which
	// do not boot: a banner says so.
	Samples   bool
	Downloads *httpapi.Downloads
	MDNS      func() discovery.Status // nil when mDNS is off
	Metrics   http.Handler
	// Password, when set, protects the page and /api/* with HTTP basic
	// auth (any user name). Device endpoints are never protected.
	Password string
	// Logger gets a line per request and a WARN per wrong password.
	Logger *slog.Logger
	// Admin carries out the page's actions; they are offered only with a
	// Password as well. Removable says a file can be taken out of the
	// catalog (a folder, not the embedded one); Folders are the catalog
	// folders an upload may go to; MaxUpload bounds an upload (shown).
	Admin     Admin
	Removable bool
	MaxUpload int64
	// Keys says uploads must verify under --verify-key (shown).
	Keys bool
	// Replica is the record's replica (--replicate); nil or returning
	// nil without one. Behind, unreachable or held back, it makes
	// /healthz "degraded" and puts a banner on the page.
	Replica func() *replica.Status
}

// PolicyView is the policy's state as the page shows it.
type PolicyView struct {
	File    string
	Err     string            // why the last reload was refused ("" when it was not)
	Paused  map[string]string // rollouts that paused themselves: image → why
	Missing []string          // rules whose image left the catalog
}

// Handler serves /, /api/*, /metrics and /healthz.
type Handler struct {
	src         Sources
	page        *template.Template
	stationPage *template.Template
	mux         *http.ServeMux
	guard       *guard
	h           http.Handler
	token       string        // the actions' CSRF token (admin.go)
	uploading   chan struct{} // one upload at a time
}

// New returns the handler.
func New(src Sources) (*Handler, error) {
	page, err := template.New("status.html").Funcs(template.FuncMap{
		"pct": percent,
		"ago": func(t time.Time) string {
			d := time.Since(t).Round(time.Second)
			switch {
			case d < time.Minute:
				return fmt.Sprintf("%ds ago", int(d.Seconds()))
			case d < time.Hour:
				return fmt.Sprintf("%dm ago", int(d.Minutes()))
			case d < 48*time.Hour:
				return fmt.Sprintf("%dh ago", int(d.Hours()))
			}
			return t.Local().Format("2006-01-02 15:04")
		},
		"size": humanSize,
	}).ParseFS(assets, "assets/status.html")
	if err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	if src.Logger == nil {
		src.Logger = slog.New(slog.DiscardHandler)
	}
	station, err := parseStation()
	if err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	if src.MaxUpload <= 0 {
		src.MaxUpload = DefaultMaxUpload
	}
	h := &Handler{src: src, page: page, stationPage: station, mux: http.NewServeMux(), guard: newGuard(src.Password, src.Logger),
		token: newToken(), uploading: make(chan struct{}, 1)}
	h.h = logged(src.Logger, h.mux)
	h.mux.HandleFunc("GET /favicon.ico", favicon)
	h.mux.HandleFunc("GET /{$}", h.protect(h.status))
	h.mux.HandleFunc("GET /api/catalog", h.protect(h.apiCatalog))
	h.mux.HandleFunc("GET /api/devices", h.protect(h.apiDevices))
	h.mux.HandleFunc("GET /api/events", h.protect(h.apiEvents))
	h.mux.HandleFunc("GET /api/downloads", h.protect(h.apiDownloads))
	h.mux.HandleFunc("GET /api/live", h.protect(h.live))
	h.mux.HandleFunc("GET /api/replica", h.protect(h.apiReplica))
	h.mux.HandleFunc("POST /admin/upload", h.action("upload", h.upload))
	h.mux.HandleFunc("POST /admin/remove", h.action("remove", h.remove))
	h.mux.HandleFunc("POST /admin/retry", h.action("retry", h.retry))
	h.mux.HandleFunc("POST /admin/batch/start", h.action("batch start", h.batchStart))
	h.mux.HandleFunc("POST /admin/batch/close", h.action("batch close", h.batchClose))
	h.mux.HandleFunc("GET /station", h.protect(h.station))
	h.mux.HandleFunc("GET /api/batches", h.protect(h.apiBatches))
	h.mux.HandleFunc("GET /api/batches/{name}", h.protect(h.apiBatch))
	h.mux.HandleFunc("GET /api/batches/{name}/{file}", h.protect(h.apiBatch))
	h.mux.HandleFunc("GET /api/batches/{name}/labels/{png}", h.protect(h.label))
	h.mux.HandleFunc("GET /healthz", h.healthz)
	if src.Metrics != nil {
		h.mux.Handle("GET /metrics", src.Metrics)
	}
	return h, nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.h.ServeHTTP(w, r) }

func (h *Handler) protect(next http.HandlerFunc) http.HandlerFunc { return h.guard.protect(next) }

// faviconSVG is otabox's tab icon: an upward arrow into a chip.
const faviconSVG = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect x="4" y="12" width="24" height="16" rx="3" fill="#0b6bcb"/><path d="M16 2l7 8h-4.5v8h-5v-8H9z" fill="#1a7f37"/></svg>`

func favicon(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "image/svg+xml")
	w.Header().Set("Cache-Control", "max-age=86400")
	io.WriteString(w, faviconSVG)
}

type mdnsView struct {
	Name, Err string
	Ifaces    []string
}

func (h *Handler) status(w http.ResponseWriter, r *http.Request) {
	var mv mdnsView
	if h.src.MDNS != nil {
		st := h.src.MDNS()
		mv.Name, mv.Err = st.Name, st.Err
		for name, ips := range st.Interfaces {
			mv.Ifaces = append(mv.Ifaces, fmt.Sprintf("%s %v", name, ips))
		}
		sort.Strings(mv.Ifaces)
	}
	data, health := h.liveData(r)
	for k, v := range map[string]any{
		"Store":       health,
		"FolderFault": h.folderFault(),
		"Replica":     h.replica(),
		"Policy":      h.policy(),
		"Recording":   h.src.Store != nil,
		"Name":        "status",
		"Version":     h.src.Version,
		"Samples":     h.src.Samples,
		"Port":        h.src.Port,
		"Path":        h.src.Path,
		"Addresses":   h.addresses(),
		"MDNS":        mv,
		"ActionsOff":  actionsOff,
		"MaxUpload":   h.src.MaxUpload,
		"Keys":        h.src.Keys,
		"Folders":     h.folders(),
	} {
		data[k] = v
	}
	h.render(w, "status.html", data)
}

// live renders the page's live part alone, for the page's poll.
func (h *Handler) live(w http.ResponseWriter, r *http.Request) {
	data, _ := h.liveData(r)
	h.render(w, "live", data)
}

func (h *Handler) render(w http.ResponseWriter, name string, data map[string]any) {
	var buf bytes.Buffer
	if err := h.page.ExecuteTemplate(&buf, name, data); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(buf.Bytes())
}

// deviceRow is a device as the page shows it: its update state as it is
// this second (a download running now, from the server's own list), and
// whether it needs a technician.
type deviceRow struct {
	store.Device
	Live    string // the update state, or "downloading IMAGE N%"
	Class   string // the state's CSS class
	Problem bool   // failed, cut off, held back, or its last request refused
	Held    bool   // there is a hold-back or a failure count to retry
}

type stateCount struct {
	Name, Class string
	N           int
}

// liveData is what the live part of the page shows, read in one go.
func (h *Handler) liveData(r *http.Request) (map[string]any, store.Health) {
	cat := h.src.Catalog()
	downloads := h.src.Downloads.List()
	devs, total, err := h.src.Store.Devices(r.Context(), store.DeviceFilter{Limit: pageDevices, ProblemsFirst: true})
	health := h.src.Store.Health()
	if err != nil && health.Fault == "" {
		health.Fault = err.Error()
	}
	now := time.Now()
	running := make(map[string]httpapi.Snapshot, len(downloads))
	for _, d := range downloads {
		if d.MAC != "" {
			running[d.MAC] = d
		}
	}
	rows := make([]deviceRow, len(devs))
	for i, d := range devs {
		held := d.HeldUntil.After(now)
		row := deviceRow{Device: d, Class: d.State, Held: held || d.Failures > 0,
			Problem: d.State == store.StateFailed || d.State == store.StateCut || held || d.Decision == "refuse"}
		row.Downloading = "" // the record's pending download; the list below is this second's
		row.Live = row.UpdateState()
		if dl, ok := running[d.MAC]; ok {
			row.Live, row.Class = fmt.Sprintf("downloading %s %d%%", dl.Image, percent(dl.SentBytes, dl.Size)), "downloading"
		}
		rows[i] = row
	}
	var counts []stateCount
	problems := 0
	if states, err := h.src.Store.States(r.Context()); err == nil {
		for _, st := range []struct{ key, name, class string }{
			{store.StateConfirmed, "confirmed", "confirmed"}, {store.StateSent, "sent, not yet confirmed", "sent"},
			{store.StateFailed, "failed", "failed"}, {store.StateCut, "cut off", "cut-off"}, {store.StateNone, "never updated", "none"},
		} {
			if n := states[st.key]; n > 0 {
				counts = append(counts, stateCount{st.name, st.class, n})
			}
		}
		if held, err := h.src.Store.HeldBack(r.Context()); err == nil && held > 0 {
			counts = append(counts, stateCount{"held back", "failed", held})
		}
		_, problems, _ = h.src.Store.Devices(r.Context(), store.DeviceFilter{State: "problem", Limit: 1})
	}
	var batches []store.Summary
	var open []store.Batch
	if bs, err := h.src.Store.Batches(r.Context()); err == nil {
		for _, b := range bs {
			if b.IsOpen() {
				open = append(open, b)
			}
			if len(batches) < pageBatches {
				bd, err := h.src.Store.BatchDevices(r.Context(), b.Name)
				if err == nil {
					batches = append(batches, store.Summarize(b, bd, now))
				}
			}
		}
	}
	data := map[string]any{
		"EmptyHelp":    h.src.EmptyHelp,
		"DeviceTotal":  total,
		"DevicesShown": len(rows),
		"Devices":      rows,
		"StateCounts":  counts,
		"Problems":     problems,
		"Downloads":    downloads,
		"Catalog":      cat.Files(),
		"Source":       cat.Source,
		"Batches":      batches,
		"OpenBatches":  open,
		"Actions":      h.actionsOn(),
		"Removable":    h.actionsOn() && h.src.Removable,
		"Token":        h.token,
	}
	if files, bytes := cat.PendingCount(); files > 0 {
		data["Reading"] = fmt.Sprintf("%d files (%s)", files, humanSize(bytes))
	}
	return data, health
}

// pageBatches is how many batches (newest first) the page lists.
const pageBatches = 10

func percent(n, of int64) int64 {
	if of <= 0 {
		return 0
	}
	return 100 * n / of
}

// humanSize writes a byte count as people read it: 512 B, 77 KB, 1.2 MB.
func humanSize(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%d KB", (n+512)>>10)
	case n < 10<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d MB", (n+(1<<19))>>20)
}

// folders are the catalog's folders an upload may go to ("" the top).
func (h *Handler) folders() []string { return h.src.Catalog().Dirs() }

// addresses are where devices reach the server: the bound address, or
// every LAN interface's IPv4 address when bound to all.
func (h *Handler) addresses() []string {
	if ip := h.src.BindIP; ip != nil && !ip.IsUnspecified() {
		return []string{ip.String()}
	}
	return lanAddresses()
}

// lanAddresses are the IPv4 addresses devices on the LAN can reach.
func lanAddresses() []string {
	var out []string
	ifs, _ := net.Interfaces()
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifi.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
				out = append(out, n.IP.String())
			}
		}
	}
	return out
}

type catalogEntry struct {
	Path    string `json:"path"`
	Type    string `json:"type"`
	Size    int64  `json:"size"`
	MD5     string `json:"md5"`
	SHA256  string `json:"sha256"`
	Family  string `json:"family,omitempty"`
	Chip    string `json:"chip,omitempty"`
	Project string `json:"project,omitempty"`
	Version string `json:"version,omitempty"`
	Date    string `json:"date"`
	Time    string `json:"time"`
	Gzip    int64  `json:"gzip_size,omitempty"`
	// Filesystem is "littlefs" or "spiffs" for a filesystem image.
	Filesystem string `json:"filesystem,omitempty"`
}

func (h *Handler) apiCatalog(w http.ResponseWriter, r *http.Request) {
	var out []catalogEntry
	for _, e := range h.src.Catalog().Files() {
		c := catalogEntry{Path: e.Path, Type: string(e.Type), Size: e.Size, MD5: e.MD5, SHA256: e.SHA256, Date: e.Date, Time: e.Time}
		if e.Image != nil {
			c.Family, c.Chip, c.Project, c.Version = e.Image.Family.String(), e.Image.Chip.String(), e.Image.Project, e.Image.Version
		}
		if e.Gzip != nil {
			c.Gzip = e.Gzip.Size
		}
		if e.FS != nil {
			c.Filesystem = string(e.FS.Kind)
		}
		out = append(out, c)
	}
	writeJSON(w, out)
}

// pageDevices is how many devices the status page lists (most recently
// seen first); /api/devices pages through the rest.
const pageDevices = 200

// An API answer holds at most pageRows rows in memory at once: it is
// written as it is read, a page of rows at a time, so that a client that
// asks for a thousand rows and never reads holds one page (see
// httpapi.extraGate for the time it may take). ?limit= is at most
// maxRows; page through the rest with ?offset= or ?before=.
const (
	pageRows = 50
	maxRows  = 1000
)

// limit reads ?limit=: def when absent or not positive, at most maxRows.
func limit(q url.Values, def int) int {
	n := atoi(q.Get("limit"))
	if n <= 0 {
		n = def
	}
	return min(n, maxRows)
}

// apiDevices: ?state=failed|confirmed|sent|cut-off|none|held|problem, ?mac=MAC or
// prefix*, ?limit= (default and at most 1000), ?offset=. The total
// matching is in X-Total-Count.
func (h *Handler) apiDevices(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.DeviceFilter{State: q.Get("state"), MAC: q.Get("mac"), Offset: max(atoi(q.Get("offset")), 0)}
	if err := f.Check(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	want := limit(q, maxRows)
	var out *jsonArray
	for sent := 0; sent < want; {
		f.Limit = min(pageRows, want-sent)
		devs, total, err := h.src.Store.Devices(r.Context(), f)
		if err != nil {
			out.fail(w, h.src.Logger, err)
			return
		}
		if out == nil {
			w.Header().Set("X-Total-Count", strconv.Itoa(total))
			out = startJSON(w)
		}
		for i := range devs {
			out.add(&devs[i])
		}
		sent += len(devs)
		f.Offset += len(devs)
		if len(devs) < f.Limit || out.err != nil {
			break
		}
	}
	out.close(w)
}

// apiEvents: newest first; ?mac=, ?endpoint=, ?decision=, ?before=ID
// (paging), ?limit= (default 100, at most 1000).
func (h *Handler) apiEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.EventFilter{MAC: q.Get("mac"), Endpoint: q.Get("endpoint"), Decision: q.Get("decision"), Before: int64(atoi(q.Get("before")))}
	want := limit(q, 100)
	var out *jsonArray
	for sent := 0; sent < want; {
		f.Limit = min(pageRows, want-sent)
		evs, err := h.src.Store.Events(r.Context(), f)
		if err != nil {
			out.fail(w, h.src.Logger, err)
			return
		}
		if out == nil {
			out = startJSON(w)
		}
		for i := range evs {
			out.add(&evs[i])
		}
		sent += len(evs)
		if len(evs) < f.Limit || out.err != nil {
			break
		}
		f.Before = evs[len(evs)-1].ID
	}
	out.close(w)
}

// jsonArray writes a JSON array one element at a time, indented as
// writeJSON indents a whole one.
type jsonArray struct {
	w   io.Writer
	n   int
	err error // the first write error: the client went away or stalled
}

// startJSON sets the headers and starts an array on w.
func startJSON(w http.ResponseWriter) *jsonArray {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	return &jsonArray{w: w}
}

func (a *jsonArray) add(v any) {
	if a.err != nil {
		return
	}
	b, err := json.MarshalIndent(v, "  ", "  ")
	if err != nil {
		a.err = err
		return
	}
	sep := ",\n  "
	if a.n == 0 {
		sep = "[\n  "
	}
	a.n++
	if _, a.err = io.WriteString(a.w, sep); a.err == nil {
		_, a.err = a.w.Write(b)
	}
}

// close ends the array; one never started (a store without a record) is
// an empty array.
func (a *jsonArray) close(w http.ResponseWriter) {
	switch {
	case a == nil:
		writeJSON(w, nil)
	case a.err != nil:
	case a.n == 0:
		io.WriteString(a.w, "[]\n")
	default:
		io.WriteString(a.w, "\n]\n")
	}
}

// fail answers a store error: 503 before anything was written; after, the
// answer is cut short (its JSON does not parse) and the log says why.
func (a *jsonArray) fail(w http.ResponseWriter, log *slog.Logger, err error) {
	if a == nil {
		http.Error(w, "fleet record: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	log.Warn("api: fleet record failed mid-answer; the answer is cut short", "err", err)
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func (h *Handler) apiDownloads(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, h.src.Downloads.List())
}

func (h *Handler) folderFault() string {
	if h.src.Folder == nil {
		return ""
	}
	return h.src.Folder()
}

func (h *Handler) policy() PolicyView {
	if h.src.Policy == nil {
		return PolicyView{}
	}
	return h.src.Policy()
}

func (h *Handler) healthz(w http.ResponseWriter, r *http.Request) {
	if h.src.Catalog() == nil {
		http.Error(w, "no catalog", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	// A replica behind is degraded, not failed: devices are served, and
	// a monitor that reads the body learns why.
	if why := h.replicaDegraded(); why != "" {
		fmt.Fprintln(w, "degraded: "+why)
		return
	}
	fmt.Fprintln(w, "ok")
}

func (h *Handler) replica() *replica.Status {
	if h.src.Replica == nil {
		return nil
	}
	return h.src.Replica()
}

func (h *Handler) replicaDegraded() string {
	if st := h.replica(); st != nil {
		return st.Degraded()
	}
	return ""
}

// apiReplica is the replica's state as JSON (404 without --replicate).
func (h *Handler) apiReplica(w http.ResponseWriter, r *http.Request) {
	st := h.replica()
	if st == nil {
		http.Error(w, "no replica: otabox was not started with --replicate", http.StatusNotFound)
		return
	}
	writeJSON(w, struct {
		*replica.Status
		Degraded string `json:"degraded,omitempty"`
	}{st, st.Degraded()})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if v == nil {
		v = []any{}
	}
	enc.Encode(v)
}
