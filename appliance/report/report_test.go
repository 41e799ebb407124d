package report

import (
	"bytes"
	"flag"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"

	"otabox/appliance/store"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// batch is a tray of four boards, one of each fate, at fixed times.
func batch() *Report {
	t0 := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	b := store.Batch{Name: "tray-7", Image: "prod/app.bin", Expect: 5, Note: "first article", Customer: "ACME", Order: "PO-1234", Source: "cli", Opened: t0,
		ImageVersion: "1.4.0", ImageMD5: "fedcba9876543210fedcba9876543210", ImageSHA256: "5d1c4a0bd0a1c5e6f3b7a18e9d2c4f60a7b3e1d9c8f2a6b4e0d7c3a9f1b5e2d8"}
	devs := []store.BatchDevice{
		{Batch: "tray-7", MAC: "5C:CF:7F:00:00:01", IP: "10.0.0.11", Family: "ESP8266", Chip: "ESP8266EX", FlashSize: 4 << 20,
			BeforeMD5: "0123456789abcdef0123456789abcdef", AfterImage: "prod/app.bin", AfterVersion: "1.4.0", AfterMD5: "fedcba9876543210fedcba9876543210",
			Bytes: 301_568, Size: 301_568, FirstSeen: t0.Add(time.Minute), LastSeen: t0.Add(3 * time.Minute),
			Started: t0.Add(time.Minute), Ended: t0.Add(time.Minute + 47*time.Second), Attempts: 1, Result: store.ResultConfirmed},
		{Batch: "tray-7", MAC: "5C:CF:7F:00:00:02", IP: "10.0.0.12", Family: "ESP8266", FlashSize: 4 << 20,
			BeforeImage: "prod/old.bin", BeforeVersion: "1.3.9", BeforeMD5: "00112233445566778899aabbccddeeff", AfterImage: "prod/app.bin", AfterVersion: "1.4.0",
			Bytes: 65_536, Size: 301_568, FirstSeen: t0.Add(2 * time.Minute), LastSeen: t0.Add(2 * time.Minute),
			Started: t0.Add(2 * time.Minute), Ended: t0.Add(2*time.Minute + 9*time.Second), Attempts: 2, Result: store.ResultCutOff, Reason: "download cut off after 65536 bytes: connection reset by peer"},
		{Batch: "tray-7", MAC: "24:0A:C4:00:00:03", IP: "10.0.0.13", Family: "ESP32", Chip: "ESP32-D0WD-V3", Revision: "3", FlashSize: 4 << 20,
			FirstSeen: t0.Add(3 * time.Minute), LastSeen: t0.Add(3 * time.Minute), Ended: t0.Add(3 * time.Minute),
			Result: store.ResultRefused, Reason: "prod/app.bin is an ESP8266 image, the device is an ESP32"},
		{Batch: "tray-7", MAC: "5C:CF:7F:00:00:04", IP: "10.0.0.14", Family: "ESP8266", FlashSize: -1,
			BeforeMD5: "0123456789abcdef0123456789abcdef", AfterImage: "prod/app.bin", AfterVersion: "1.4.0", Bytes: 301_568, Size: 301_568,
			FirstSeen: t0.Add(4 * time.Minute), LastSeen: t0.Add(4 * time.Minute), Started: t0.Add(4 * time.Minute), Attempts: 1, Result: store.ResultWaiting},
	}
	return New(b, devs, t0.Add(time.Hour))
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		os.MkdirAll("testdata", 0o755)
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it):\n%s", name, got)
	}
}

// TestReportGolden: the CSV and JSON a customer's MES imports, byte for
// byte.
func TestReportGolden(t *testing.T) {
	for _, format := range []string{CSV, JSON} {
		t.Run(format, func(t *testing.T) {
			var b bytes.Buffer
			if err := Write(&b, format, batch()); err != nil {
				t.Fatal(err)
			}
			golden(t, "tray-7."+format, b.Bytes())
		})
	}
	t.Run("summary", func(t *testing.T) {
		s := batch().Summary
		if s.Seen != 4 || s.Confirmed != 1 || s.NeedsHelp != 2 || s.Results[store.ResultWaiting] != 1 || s.MedianSecs != 47 {
			t.Errorf("summary %+v", s)
		}
	})
}

// TestReportHTMLPrintsOnA4: the page asks for A4 and carries the summary
// table and a row per board.
func TestReportHTMLPrintsOnA4(t *testing.T) {
	var b bytes.Buffer
	if err := batch().HTML(&b); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, want := range []string{"size: A4", `id="summary"`, "PO-1234", "ACME", `<td id="confirmed">1</td>`, "47s", "5C:CF:7F:00:00:02", "connection reset by peer", "ESP32-D0WD-V3 rev 3"} {
		if !strings.Contains(page, want) {
			t.Errorf("report page lacks %q", want)
		}
	}
	if n := strings.Count(page, "<tr data-mac="); n != 4 {
		t.Errorf("%d board rows, want 4", n)
	}
}

// decodeQR reads a QR code back from a PNG, with a decoder that shares no
// code with the encoder.
func decodeQR(t *testing.T, b []byte) string {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		t.Fatal(err)
	}
	res, err := qrcode.NewQRCodeReader().Decode(bmp, nil)
	if err != nil {
		t.Fatalf("QR code does not decode: %v", err)
	}
	return res.GetText()
}

// TestLabelsDecodeBack: every label's QR code says the board's MAC,
// batch, image, version (only what it was proven to run) and result; the
// sheet carries labels only for boards that passed, and with AllLabels
// one per board, those that did not pass marked NOT PASSED.
func TestLabelsDecodeBack(t *testing.T) {
	r := batch()
	for _, d := range r.Devices {
		png, err := LabelPNG(LabelText(r.Summary.Batch, d), 200)
		if err != nil {
			t.Fatal(err)
		}
		got := decodeQR(t, png)
		want := "MAC: " + d.MAC + "\nBATCH: tray-7\nIMAGE: prod/app.bin\n"
		if Passed(d) {
			want += "VERSION: 1.4.0\n"
		}
		if want += "RESULT: " + d.Result; got != want {
			t.Errorf("%s: QR says %q, want %q", d.MAC, got, want)
		}
	}
	for _, all := range []bool{false, true} {
		r.AllLabels = all
		var sheet bytes.Buffer
		if err := r.Sheet(&sheet); err != nil {
			t.Fatal(err)
		}
		want, marked := 1, 0 // one board of four passed
		if all {
			want, marked = len(r.Devices), len(r.Devices)-1
		}
		if n := strings.Count(sheet.String(), `src="data:image/png;base64,`); n != want {
			t.Errorf("all=%v: sheet has %d label images, want %d", all, n, want)
		}
		if n := strings.Count(sheet.String(), "NOT PASSED</span>"); n != marked {
			t.Errorf("all=%v: %d labels marked NOT PASSED, want %d", all, n, marked)
		}
	}
}

// TestReportSaysOnlyWhatWasProven: a board cut off, refused or waiting
// shows no "after" image; the verdict counts the boards that passed
// against those expected and names those that need a hand; a batch
// closed with boards still waiting says so, and counts them as needing
// attention; times carry the zone; the page ends with a sign-off line.
func TestReportSaysOnlyWhatWasProven(t *testing.T) {
	r := batch()
	var b bytes.Buffer
	r.HTML(&b)
	page := b.String()
	if n := strings.Count(page, `data-label="After" class="mono">prod/app.bin 1.4.0</td>`); n != 1 {
		t.Errorf("%d rows show prod/app.bin 1.4.0 as after, want only the confirmed one", n)
	}
	if v := r.Verdict(); v != "1 passed of 5 expected; need a hand: 5C:CF:7F:00:00:02, 24:0A:C4:00:00:03, 1 never seen" {
		t.Errorf("verdict %q", v)
	}
	zone := r.Generated.Local().Format("MST") // the box's zone
	for _, want := range []string{`id="verdict"`, "Checked by", "08:00:00 " + zone, `class="pagehead"`, "prod/app.bin 1.4.0</td>", "fedcba9876543210fedcba9876543210", "5d1c4a0bd0a1c5e6", "Times</th><td>in " + zone} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	closed := batch()
	closed.Summary.Batch.Closed = closed.Generated
	devs := closed.Devices
	closed = New(closed.Summary.Batch, devs, closed.Generated)
	if s := closed.Summary; s.Unproven != 1 || s.NeedsHelp != 3 {
		t.Errorf("closed with a board waiting: unproven %d, needs attention %d", s.Unproven, s.NeedsHelp)
	}
	b.Reset()
	closed.HTML(&b)
	if !strings.Contains(b.String(), "closed with 1 unproven") || !strings.Contains(closed.Verdict(), "5C:CF:7F:00:00:04") {
		t.Errorf("a batch closed with a waiting board does not say so: %s", closed.Verdict())
	}
}
