// Package report turns a factory batch's record into what an operator
// hands over: a CSV or JSON file for the customer's MES, an A4 page with
// a summary table, and a QR label per board. It reads nothing itself;
// the fleet record (store) says what each board did.
package report

import (
	"embed"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/skip2/go-qrcode"

	"otabox/appliance/store"
)

// Report is one batch as of a moment: its summary and one row per device.
type Report struct {
	Summary store.Summary       `json:"batch"`
	Devices []store.BatchDevice `json:"devices"`
	// Generated is when the report was made (shown, and the "as of" of
	// open batches).
	Generated time.Time `json:"generated"`
}

// New builds a report of b from its devices (by MAC, as the store lists
// them) as of now.
func New(b store.Batch, devs []store.BatchDevice, now time.Time) *Report {
	for i := range devs {
		devs[i].DurationS = int64(devs[i].Duration().Seconds())
	}
	return &Report{Summary: store.Summarize(b, devs, now), Devices: devs, Generated: now.UTC()}
}

// Formats a report is written in.
const (
	CSV    = "csv"
	JSON   = "json"
	HTML   = "html"
	Labels = "labels" // a printable sheet of QR labels (HTML, images inline)
)

// Write writes r in format.
func Write(w io.Writer, format string, r *Report) error {
	switch format {
	case CSV:
		return r.CSV(w)
	case JSON:
		return r.JSON(w)
	case HTML:
		return r.HTML(w)
	case Labels:
		return r.Sheet(w)
	}
	return fmt.Errorf("unknown report format %q (csv, json, html, labels)", format)
}

// csvHeader is the CSV's first row; one row per device follows.
var csvHeader = []string{"batch", "mac", "ip", "family", "chip", "revision", "flash_size",
	"before_image", "before_version", "before_md5", "after_image", "after_version", "after_md5",
	"bytes", "started", "ended", "duration_s", "attempts", "result", "reason", "note", "customer", "order"}

func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// CSV writes one row per device, with the batch's operator fields on
// every row (a spreadsheet or MES import needs no second file).
func (r *Report) CSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	cw.Write(csvHeader)
	b := r.Summary.Batch
	for _, d := range r.Devices {
		flash := ""
		if d.FlashSize >= 0 {
			flash = strconv.FormatInt(d.FlashSize, 10)
		}
		dur := ""
		if !d.Started.IsZero() && !d.Ended.IsZero() {
			dur = strconv.FormatInt(d.DurationS, 10)
		}
		cw.Write([]string{b.Name, d.MAC, d.IP, d.Family, d.Chip, d.Revision, flash,
			d.BeforeImage, d.BeforeVersion, d.BeforeMD5, d.AfterImage, d.AfterVersion, d.AfterMD5,
			strconv.FormatInt(d.Bytes, 10), rfc3339(d.Started), rfc3339(d.Ended), dur, strconv.Itoa(d.Attempts),
			d.Result, d.Reason, b.Note, b.Customer, b.Order})
	}
	cw.Flush()
	return cw.Error()
}

// JSON writes the summary and the devices.
func (r *Report) JSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

//go:embed assets/*.html
var assets embed.FS

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.Local().Format("2006-01-02 15:04:05")
	},
	"secs": func(d time.Duration) string {
		if d <= 0 {
			return ""
		}
		return d.Round(time.Second).String()
	},
	"kb":   func(n int64) string { return strconv.FormatInt((n+1023)/1024, 10) + " KB" },
	"rate": func(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) },
	"label": func(b store.Batch, d store.BatchDevice) template.URL {
		png, err := LabelPNG(LabelText(b, d), 200)
		if err != nil {
			return ""
		}
		return template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(png))
	},
	"lines": func(s string) []string { return strings.Split(s, "\n") },
	"text":  LabelText,
}).ParseFS(assets, "assets/*.html"))

// HTML writes the report as a page that prints on A4: a summary table,
// then one row per device.
func (r *Report) HTML(w io.Writer) error {
	return pages.ExecuteTemplate(w, "report.html", r)
}

// Sheet writes a printable sheet of labels, one per device, each a QR
// code (LabelText) with the same text beneath it. The images are inline,
// so the file prints the same offline.
func (r *Report) Sheet(w io.Writer) error {
	return pages.ExecuteTemplate(w, "labels.html", r)
}

// LabelText is what a device's QR code says: its MAC, the batch, the image
// and version it was given, and the result, one "KEY: value" per line
// (what a phone's scanner shows as is).
func LabelText(b store.Batch, d store.BatchDevice) string {
	img, ver := d.AfterImage, d.AfterVersion
	if img == "" {
		img = b.Image
	}
	lines := []string{"MAC: " + d.MAC, "BATCH: " + b.Name, "IMAGE: " + img}
	if ver != "" {
		lines = append(lines, "VERSION: "+ver)
	}
	return strings.Join(append(lines, "RESULT: "+d.Result), "\n")
}

// LabelPNG encodes text as a QR code image of size×size pixels, medium
// error correction (a label survives a scuff).
func LabelPNG(text string, size int) ([]byte, error) {
	return qrcode.Encode(text, qrcode.Medium, size)
}
