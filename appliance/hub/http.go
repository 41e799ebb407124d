package hub

import (
	"bytes"
	"context"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"strconv"
	"time"

	"otabox/appliance/report"
	"otabox/appliance/store"
)

//go:embed hub.html
var pageHTML string

var page = template.Must(template.New("hub").Funcs(template.FuncMap{
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return time.Since(t).Round(time.Second).String() + " ago"
	},
}).Parse(pageHTML))

// Bounds of one answer: a hub over hundreds of boxes never builds an
// unbounded one.
const (
	maxDevices     = 10000
	defaultDevices = 1000
	maxEvents      = 1000
	defaultEvents  = 100
)

// Handler serves the hub's page and API; Password, when set, protects
// all of it (HTTP basic auth, any user name).
func (h *Hub) Handler(password string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", h.page)
	mux.HandleFunc("GET /healthz", h.healthz)
	mux.HandleFunc("GET /api/boxes", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, h.Boxes(r.Context())) })
	mux.HandleFunc("GET /api/devices", h.apiDevices)
	mux.HandleFunc("GET /api/events", h.apiEvents)
	mux.HandleFunc("GET /api/batches/{name}", h.apiBatch)
	if password == "" {
		return mux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, p, ok := r.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(p), []byte(password)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="otabox hub"`)
			http.Error(w, "the hub's password is required", http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func limitOf(r *http.Request, def, most int) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > most {
		return 0, fmt.Errorf("limit %q: give 1 to %d", v, most)
	}
	return n, nil
}

func (h *Hub) apiDevices(w http.ResponseWriter, r *http.Request) {
	n, err := limitOf(r, defaultDevices, maxDevices)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	q := r.URL.Query()
	devs, total, err := h.Devices(r.Context(), store.DeviceFilter{State: q.Get("state"), MAC: q.Get("mac"), Limit: n})
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	writeJSON(w, devs)
}

func (h *Hub) apiEvents(w http.ResponseWriter, r *http.Request) {
	n, err := limitOf(r, defaultEvents, maxEvents)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	q := r.URL.Query()
	evs, err := h.Events(r.Context(), store.EventFilter{MAC: q.Get("mac"), Endpoint: q.Get("endpoint"), Decision: q.Get("decision"), Limit: n})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, evs)
}

// apiBatch is one report of a batch across the stations that ran it:
// ?format=csv (default), json, html or labels, as otabox report writes.
func (h *Hub) apiBatch(w http.ResponseWriter, r *http.Request) {
	format := r.URL.Query().Get("format")
	if format == "" {
		format = report.CSV
	}
	switch format {
	case report.CSV, report.JSON, report.HTML, report.Labels:
	default:
		http.Error(w, fmt.Sprintf("format %q: use csv, json, html or labels", format), http.StatusBadRequest)
		return
	}
	b, devs, stations, err := h.Batch(r.Context(), r.PathValue("name"))
	switch {
	case errors.Is(err, ErrNoBatch):
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	var buf bytes.Buffer
	if err := report.Write(&buf, format, report.New(b, devs, time.Now())); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	types := map[string]string{report.CSV: "text/csv; charset=utf-8", report.JSON: "application/json", report.HTML: "text/html; charset=utf-8", report.Labels: "text/html; charset=utf-8"}
	w.Header().Set("Content-Type", types[format])
	w.Header().Set("X-Otabox-Stations", fmt.Sprint(stations))
	w.Write(buf.Bytes())
}

// healthz is "ok" while every box's copy is current, else "degraded:"
// naming the first box whose replica could not be read: the hub still
// answers with its last copy.
func (h *Hub) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	for _, b := range h.Boxes(r.Context()) {
		switch {
		case b.Err != "":
			fmt.Fprintf(w, "degraded: box %s: %s\n", b.Name, b.Err)
			return
		case b.Refreshed.IsZero():
			fmt.Fprintf(w, "degraded: box %s not read yet\n", b.Name)
			return
		}
	}
	fmt.Fprintln(w, "ok")
}

func (h *Hub) page(w http.ResponseWriter, r *http.Request) {
	devs, total, _ := h.Devices(r.Context(), store.DeviceFilter{Limit: 500})
	var buf bytes.Buffer
	err := page.Execute(&buf, map[string]any{"Boxes": h.Boxes(r.Context()), "Devices": devs, "Total": total, "Refresh": h.cfg.Refresh})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(buf.Bytes())
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// Serve reads the boxes and answers on addr until ctx is done. The port
// opens at once; each box shows "not read yet" until its first restore.
func (h *Hub) Serve(ctx context.Context, addr, password string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("hub: listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h.Handler(password), ReadHeaderTimeout: 10 * time.Second, WriteTimeout: time.Minute, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.Run(ctx)
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	h.log.Info("hub serving", "addr", ln.Addr().String(), "boxes", len(h.boxes), "refresh", h.cfg.Refresh)
	err = srv.Serve(ln)
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
