package web

import (
	"fmt"
	"html/template"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"otabox/appliance/report"
	"otabox/appliance/store"
)

// tile is one board on the station page.
type tile struct {
	store.BatchDevice
	Label    string // what the operator reads from a metre away
	Detail   string
	Progress int64 // percent of a running download; 0 when none runs
}

// attention orders tiles: boards that need a hand first, then running
// ones, then those waiting for their reboot, then the confirmed.
var attention = map[string]int{
	store.ResultFailed: 0, store.ResultCutOff: 0, store.ResultRefused: 0, store.ResultHeld: 0,
	store.ResultInProgress: 1, store.ResultWaiting: 2, store.ResultConfirmed: 3, store.ResultFlashed: 3,
}

var tileLabel = map[string]string{
	store.ResultFailed: "failed", store.ResultCutOff: "cut off", store.ResultRefused: "refused", store.ResultHeld: "not sent",
	store.ResultInProgress: "updating", store.ResultWaiting: "waiting for reboot", store.ResultConfirmed: "done",
	store.ResultFlashed: "flashed",
}

// pickBatch is the batch a page shows: the one named, else the newest
// open one, else the newest.
func (h *Handler) pickBatch(r *http.Request, name string) (*store.Batch, error) {
	if name != "" {
		b, ok, err := h.src.Store.Batch(r.Context(), name)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("no batch %q", name)
		}
		return b, nil
	}
	all, err := h.src.Store.Batches(r.Context())
	if err != nil || len(all) == 0 {
		return nil, err
	}
	for i := range all {
		if all[i].IsOpen() {
			return &all[i], nil
		}
	}
	return &all[0], nil
}

// station is the factory bench's screen: one batch's progress and a tile
// per board, failures first.
func (h *Handler) station(w http.ResponseWriter, r *http.Request) {
	data := map[string]any{}
	b, err := h.pickBatch(r, r.URL.Query().Get("batch"))
	switch {
	case h.src.Store == nil:
		data["Err"] = `No fleet record is kept (started with --data-dir ""): batches need one.`
	case err != nil:
		data["Err"] = err.Error()
	case b == nil:
		data["Err"] = "No batch yet: start one with otabox batch start NAME --image PATH."
	}
	if b != nil {
		devs, err := h.src.Store.BatchDevices(r.Context(), b.Name)
		if err != nil {
			data["Err"] = "fleet record: " + err.Error()
		}
		sum := store.Summarize(*b, devs, time.Now())
		data["Summary"] = sum
		data["Of"] = max(sum.Expect, sum.Seen)
		data["Median"] = "–"
		switch {
		case sum.MedianTime >= time.Second:
			data["Median"] = sum.MedianTime.Round(time.Second).String()
		case sum.Confirmed > 0:
			data["Median"] = "under 1s"
		}
		data["Tiles"] = h.tiles(devs)
		data["Warnings"] = h.batchWarnings(b)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	tmpl := "station.html"
	if r.URL.Query().Get("fragment") != "" {
		tmpl = "board"
	}
	if err := h.stationPage.ExecuteTemplate(w, tmpl, data); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

// batchWarnings say why a batch may give no device its image: its image
// is not in the catalog (devices are answered 304 with that reason).
func (h *Handler) batchWarnings(b *store.Batch) []string {
	if !b.IsOpen() {
		return nil
	}
	if _, ok := h.src.Catalog().File(b.Image); !ok {
		return []string{fmt.Sprintf("%s is not in the catalog: boards are answered 304 with that reason until it is (or close the batch).", b.Image)}
	}
	return nil
}

func (h *Handler) tiles(devs []store.BatchDevice) []tile {
	running := map[string][2]int64{}
	for _, d := range h.src.Downloads.List() {
		if d.MAC != "" {
			running[strings.ToUpper(d.MAC)] = [2]int64{d.SentBytes, d.Size}
		}
	}
	out := make([]tile, 0, len(devs))
	for _, d := range devs {
		t := tile{BatchDevice: d, Label: tileLabel[d.Result], Detail: d.Reason}
		switch d.Result {
		case store.ResultInProgress:
			if p, ok := running[d.MAC]; ok && p[1] > 0 {
				t.Progress = max(1, 100*p[0]/p[1])
				t.Detail = fmt.Sprintf("%d of %d KB", p[0]>>10, p[1]>>10)
			} else if d.Slot != "" && d.Size > 0 {
				// Written over USB by otabox flash, which keeps the bytes
				// in the record once a second.
				t.Progress = max(1, 100*d.Bytes/d.Size)
				t.Detail = fmt.Sprintf("over USB: %d of %d KB", d.Bytes>>10, d.Size>>10)
			}
		case store.ResultFlashed:
			t.Detail = strings.TrimSpace(d.AfterImage+" "+d.AfterVersion) + ", written over USB and verified"
		case store.ResultConfirmed:
			t.Detail = strings.TrimSpace(d.AfterImage + " " + d.AfterVersion)
			if x := d.Duration(); x > 0 {
				t.Detail += " in " + x.String()
			}
		case store.ResultWaiting:
			t.Detail = "sent whole; the board confirms when it checks in after its reboot"
		}
		if d.Attempts > 1 {
			t.Detail += fmt.Sprintf(" (attempt %d)", d.Attempts)
		}
		out = append(out, t)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := attention[out[i].Result], attention[out[j].Result]
		if a != b {
			return a < b
		}
		if si, sj := out[i].Slot, out[j].Slot; si != sj {
			// Boards on a USB tray stand in slot order, as they sit.
			ni, ei := strconv.Atoi(si)
			nj, ej := strconv.Atoi(sj)
			switch {
			case ei == nil && ej == nil:
				return ni < nj
			case si == "" || sj == "":
				return sj == "" // slotted boards before the others
			}
			return si < sj
		}
		return out[i].MAC < out[j].MAC
	})
	return out
}

// apiBatches lists every batch, newest first, with its counts.
func (h *Handler) apiBatches(w http.ResponseWriter, r *http.Request) {
	bs, err := h.src.Store.Batches(r.Context())
	if err != nil {
		http.Error(w, "fleet record: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	out := make([]store.Summary, 0, len(bs))
	for _, b := range bs {
		devs, err := h.src.Store.BatchDevices(r.Context(), b.Name)
		if err != nil {
			http.Error(w, "fleet record: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		out = append(out, store.Summarize(b, devs, time.Now()))
	}
	writeJSON(w, out)
}

// batchReport reads the batch named in the path; it answers the error
// itself and returns nil.
func (h *Handler) batchReport(w http.ResponseWriter, r *http.Request) *report.Report {
	name := r.PathValue("name")
	b, ok, err := h.src.Store.Batch(r.Context(), name)
	if err != nil {
		http.Error(w, "fleet record: "+err.Error(), http.StatusServiceUnavailable)
		return nil
	}
	if !ok {
		http.Error(w, fmt.Sprintf("no batch %q", name), http.StatusNotFound)
		return nil
	}
	devs, err := h.src.Store.BatchDevices(r.Context(), name)
	if err != nil {
		http.Error(w, "fleet record: "+err.Error(), http.StatusServiceUnavailable)
		return nil
	}
	return report.New(*b, devs, time.Now())
}

// apiBatch is one batch: GET /api/batches/NAME (its report as JSON),
// .../report.csv, .../report.json, .../report.html and .../labels (the
// printable sheet).
func (h *Handler) apiBatch(w http.ResponseWriter, r *http.Request) {
	file := r.PathValue("file")
	format, ctype := "", ""
	switch file {
	case "", "report.json":
		format, ctype = report.JSON, "application/json"
	case "report.csv":
		format, ctype = report.CSV, "text/csv; charset=utf-8"
		w.Header().Set("Content-Disposition", "attachment; filename="+r.PathValue("name")+".csv")
	case "report.html":
		format, ctype = report.HTML, "text/html; charset=utf-8"
	case "labels":
		format, ctype = report.Labels, "text/html; charset=utf-8"
	default:
		http.Error(w, "no "+file+" for a batch: report.csv, report.json, report.html, labels, labels/MAC.png", http.StatusNotFound)
		return
	}
	rep := h.batchReport(w, r)
	if rep == nil {
		return
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Cache-Control", "no-store")
	if err := report.Write(w, format, rep); err != nil {
		h.src.Logger.Warn("web: batch report not written", "batch", rep.Summary.Name, "err", err)
	}
}

// label is one board's QR label: GET /api/batches/NAME/labels/MAC.png.
func (h *Handler) label(w http.ResponseWriter, r *http.Request) {
	mac, ok := strings.CutSuffix(strings.ToUpper(r.PathValue("png")), ".PNG")
	if !ok {
		http.Error(w, "labels are MAC.png", http.StatusNotFound)
		return
	}
	rep := h.batchReport(w, r)
	if rep == nil {
		return
	}
	for _, d := range rep.Devices {
		if d.MAC == mac {
			png, err := report.LabelPNG(report.LabelText(rep.Summary.Batch, d), 256)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.Header().Set("Content-Type", "image/png")
			w.Header().Set("Cache-Control", "no-store")
			w.Write(png)
			return
		}
	}
	http.Error(w, fmt.Sprintf("no device %s in batch %s", mac, rep.Summary.Name), http.StatusNotFound)
}

func parseStation() (*template.Template, error) {
	return template.New("station.html").ParseFS(assets, "assets/station.html")
}
