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
	b := store.Batch{Name: "tray-7", Image: "prod/app.bin", Expect: 5, Note: "first article", Customer: "ACME", Order: "PO-1234", Source: "cli", Opened: t0}
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
// batch, image, version and result, and the sheet carries one per board.
func TestLabelsDecodeBack(t *testing.T) {
	r := batch()
	for _, d := range r.Devices {
		png, err := LabelPNG(LabelText(r.Summary.Batch, d), 200)
		if err != nil {
			t.Fatal(err)
		}
		got := decodeQR(t, png)
		want := "MAC: " + d.MAC + "\nBATCH: tray-7\nIMAGE: prod/app.bin\n"
		if d.AfterVersion != "" {
			want += "VERSION: 1.4.0\n"
		}
		if want += "RESULT: " + d.Result; got != want {
			t.Errorf("%s: QR says %q, want %q", d.MAC, got, want)
		}
	}
	var sheet bytes.Buffer
	if err := r.Sheet(&sheet); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(sheet.String(), `src="data:image/png;base64,`); n != len(r.Devices) {
		t.Errorf("sheet has %d label images, want %d", n, len(r.Devices))
	}
}
