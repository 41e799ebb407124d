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
	// AllLabels prints a label for every board, those that did not pass
	// marked NOT PASSED across it; by default only boards that passed get
	// one (a label is what goes into the customer's box).
	AllLabels bool `json:"-"`
}

func sign(n int) int {
	if n < 0 {
		return -1
	}
	return 1
}

// Passed reports a board proven to hold the image: it checked in running
// it, or it was written over USB and its flash read back by MD5.
func Passed(d store.BatchDevice) bool {
	return d.Result == store.ResultConfirmed || d.Result == store.ResultFlashed
}

// Labelled are the boards that get a label.
func (r *Report) Labelled() []store.BatchDevice {
	if r.AllLabels {
		return r.Devices
	}
	var out []store.BatchDevice
	for _, d := range r.Devices {
		if Passed(d) {
			out = append(out, d)
		}
	}
	return out
}

// Verdict is the report's one line: how many passed of how many, and
// which boards need a hand (by slot where they had one, else by MAC).
func (r *Report) Verdict() string {
	s := r.Summary
	of := s.Seen
	if s.Expect > of {
		of = s.Expect
	}
	passed := s.Confirmed + s.Flashed
	v := fmt.Sprintf("%d passed of %d", passed, of)
	if s.Expect > 0 {
		v += " expected"
	}
	var hand []string
	for _, d := range r.Devices {
		if Passed(d) || (d.Result == store.ResultWaiting || d.Result == store.ResultInProgress) && s.IsOpen() {
			continue
		}
		where := d.MAC
		if d.Slot != "" {
			where = "slot " + d.Slot
		}
		if d.Station != "" {
			where = d.Station + " " + where
		}
		hand = append(hand, where)
	}
	if missing := s.Expect - s.Seen; missing > 0 {
		hand = append(hand, fmt.Sprintf("%d never seen", missing))
	}
	if len(hand) > 0 {
		v += "; need a hand: " + strings.Join(hand, ", ")
	}
	return v
}

// New builds a report of b from its devices (by MAC, as the store lists
// them) as of now.
func New(b store.Batch, devs []store.BatchDevice, now time.Time) *Report {
	for i := range devs {
		devs[i].DurationS = int64(devs[i].Duration().Seconds())
		if !Passed(devs[i]) {
			// "After" is only what a board was proven to run: one cut off,
			// refused or still waiting was given an image, nothing more.
			devs[i].AfterImage, devs[i].AfterVersion, devs[i].AfterMD5, devs[i].AfterSHA256 = "", "", "", ""
		}
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
	"bytes", "started", "ended", "duration_s", "attempts", "result", "reason", "note", "customer", "order", "slot", "after_sha256", "flash_id", "station"}

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
			d.Result, d.Reason, b.Note, b.Customer, b.Order, d.Slot, d.AfterSHA256, d.FlashID, d.Station})
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
		return t.Local().Format("2006-01-02 15:04:05 MST")
	},
	"passed": Passed,
	"zone": func(t time.Time) string {
		name, off := t.Local().Zone()
		return fmt.Sprintf("%s (UTC%+03d:%02d)", name, off/3600, (off%3600)/60*sign(off))
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
// and version it was proven to run (the batch's image, for a board that
// did not pass), and the result, one "KEY: value" per line (what a phone's
// scanner shows as is).
func LabelText(b store.Batch, d store.BatchDevice) string {
	img, ver := d.AfterImage, d.AfterVersion
	if !Passed(d) || img == "" {
		img, ver = b.Image, ""
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
