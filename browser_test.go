package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"otabox/appliance/emu"
	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
	"otabox/appliance/report"
	"otabox/appliance/store"
)

// artifactsDir is where tests leave screenshots: $ARTIFACTS when set,
// else a folder under $TMPDIR (never the source tree).
func artifactsDir(t *testing.T) string {
	dir := os.Getenv("ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "otabox-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// readSlowly reads up to chunk bytes from br every period, as a slow
// device does, until the returned stop is called or the reads fail.
func readSlowly(br *bufio.Reader, chunk int, period time.Duration) (stop func()) {
	done := make(chan struct{})
	go func() {
		buf := make([]byte, chunk)
		for {
			select {
			case <-done:
				return
			case <-time.After(period):
			}
			if _, err := br.Read(buf); err != nil {
				return
			}
		}
	}()
	return func() { close(done) }
}

// TestStatusPageInBrowser loads the status page in headless Chromium at a
// phone's width (390 px) and a desktop's (1280 px) while a slow download
// runs: no sideways scrolling, the device's row shows its download live,
// and the progress bar moves (it counts bytes the device acknowledged).
// Screenshots land in the artifacts folder.
func TestStatusPageInBrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		skipOrFail(t, "needs Debian's chromium (apt-get install chromium)")
	}
	dir, v1, _, _ := fleetCatalog(t)
	r := start(t, "--catalog", dir)

	// A device that checked in (and got its update), then a slow download.
	dev := emu.New(emu.ESP8266v31)
	dev.STAMAC, dev.Running, dev.Source = "5C:CF:7F:00:00:A1", v1, net.IPv4(127, 10, 0, 1)
	if res := dev.Update(r.addr, "/update"); res.Outcome != emu.OK {
		t.Fatalf("update: %v", res)
	}
	cam := emu.New(emu.ESP32v30)
	cam.STAMAC, cam.FreeSpace = "24:0A:C4:00:00:A2", 16<<20
	conn, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write(cam.UpdateRequest(r.addr, "/cam.bin"))
	br := bufio.NewReader(conn)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("slow download: %v %v", resp, err)
	}
	// 320 KB/s: 12 MB take about 40 s, far longer than the test looks.
	defer readSlowly(br, 32<<10, 100*time.Millisecond)()
	for _, width := range []int{390, 1280} {
		t.Run(strconv.Itoa(width)+"px", func(t *testing.T) { statusPageAt(t, chromium, r.addr, width) })
	}
}

// browser starts headless Chromium at width × 900 for one test, with
// nothing that would reach beyond loopback; it ends with the test.
func browser(t *testing.T, chromium string, width int) context.Context {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(func() { cancel(); cancelCtx(); cancelAlloc() })
	return ctx
}

func statusPageAt(t *testing.T, chromium, addr string, width int) {
	ctx := browser(t, chromium, width)

	barWidth := func() float64 {
		w, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(function(){var b=document.querySelector('#downloads tr[data-id] .bar > div');return b?b.style.width:'';})()`))
		if err != nil {
			t.Fatal(err)
		}
		f, _ := strconv.ParseFloat(strings.TrimSuffix(w, "%"), 64)
		return f
	}
	const deviceRow = chromedp.CSS(`#devices tr[data-mac="5C:CF:7F:00:00:A1"]`)
	const camRow = chromedp.CSS(`#devices tr[data-mac="24:0A:C4:00:00:A2"] td.update`)
	if err := chromedp.Do(ctx,
		chromedp.EmulateViewport(int64(width), 900),
		chromedp.Navigate("http://"+addr+"/"),
		chromedp.WaitVisible(deviceRow),
		chromedp.WaitVisible(chromedp.CSS(`#downloads tr[data-id]`)),
	); err != nil {
		t.Fatal(err)
	}
	// The page polls every second: watch the bar for up to 6 s.
	first, second := barWidth(), 0.0
	for i := 0; i < 12 && second <= first; i++ {
		time.Sleep(500 * time.Millisecond)
		second = barWidth()
	}
	if second <= first {
		t.Errorf("progress bar did not move: %.0f%% then %.0f%%", first, second)
	}
	row, err := chromedp.Run(ctx, chromedp.Text(deviceRow))
	if err != nil || !strings.Contains(row, "meter-1.1.0.bin") || !strings.Contains(row, "sent") {
		t.Errorf("device row %q %v", row, err)
	}
	live, err := chromedp.Run(ctx, chromedp.Text(camRow))
	if err != nil || !strings.HasPrefix(live, "downloading cam.bin ") {
		t.Errorf("the downloading device's row says %q (%v), not its download", live, err)
	}
	overflow, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`document.documentElement.scrollWidth - window.innerWidth`))
	if err != nil || overflow > 0 {
		t.Errorf("at %d px the page scrolls sideways by %.0f px (%v)", width, overflow, err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100 gives a PNG
	if err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(artifactsDir(t), fmt.Sprintf("status-page-%dpx.png", width))
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("progress %.0f%% -> %.0f%%; screenshot %s (%d bytes)", first, second, shot, len(png))
}

// TestStationPageInBrowser loads /station in headless Chromium at a
// phone's width and a bench monitor's while a tray is half done: the
// refused board's tile comes first and gives the reason, the board being
// flashed has a progress bar that moves, the one waiting for its reboot
// is grey, and the header counts 1 / 4 confirmed. Screenshots land in the
// artifacts folder.
func TestStationPageInBrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		skipOrFail(t, "needs Debian's chromium (apt-get install chromium)")
	}
	dir, _, sketch := benchCatalog(t)
	data := t.TempDir()
	if _, err := otaboxCmd(t, "batch", "start", "tray-s", "--image", "prod.bin", "--expect", "4", "--catalog", dir, "--data-dir", data); err != nil {
		t.Fatal(err)
	}
	r := startData(t, data, "--catalog", dir)
	boards := wifiTray(sketch, 10)
	for _, i := range []int{0, 3, 9} { // confirmed, refused, waiting
		boards[i].run(t, r.addr)
	}
	// Board 1 is being flashed, slowly: a socket that takes 20 KB/s.
	slow := boards[1].dev
	conn, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(8192)
	conn.Write(slow.UpdateRequest(r.addr, "/update"))
	br := bufio.NewReaderSize(conn, 4096)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("slow board: %v %v", resp, err)
	}
	defer readSlowly(br, 4096, 200*time.Millisecond)()
	for _, width := range []int{390, 1280} {
		t.Run(strconv.Itoa(width)+"px", func(t *testing.T) { stationAt(t, chromium, r.addr, width, boards) })
	}
}

func stationAt(t *testing.T, chromium, addr string, width int, boards []*board) {
	ctx := browser(t, chromium, width)
	tile := func(b *board) string { return `.tile[data-mac="` + mac(b) + `"]` }
	if err := chromedp.Do(ctx,
		chromedp.EmulateViewport(int64(width), 900),
		chromedp.Navigate("http://"+addr+"/station"),
		chromedp.WaitVisible(chromedp.CSS(tile(boards[1])+" .bar")),
	); err != nil {
		t.Fatal(err)
	}
	barWidth := func() float64 {
		w, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(function(){var b=document.querySelector('`+tile(boards[1])+` .bar > div');return b?b.style.width:'';})()`))
		if err != nil {
			t.Fatal(err)
		}
		f, _ := strconv.ParseFloat(strings.TrimSuffix(w, "%"), 64)
		return f
	}
	first, second := barWidth(), 0.0
	for i := 0; i < 12 && second <= first; i++ {
		time.Sleep(500 * time.Millisecond)
		second = barWidth()
	}
	if second <= first {
		t.Errorf("the flashing board's bar did not move: %.0f%% then %.0f%%", first, second)
	}
	firstTile, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('.tile').getAttribute('data-mac')`))
	if err != nil || firstTile != mac(boards[3]) {
		t.Errorf("first tile %q (%v), want the refused board %s", firstTile, err, mac(boards[3]))
	}
	refused, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(tile(boards[3]))))
	if !strings.Contains(refused, "REFUSED") || !strings.Contains(refused, "the device is an ESP32") {
		t.Errorf("refused tile says %q", refused)
	}
	colours, err := chromedp.Run(ctx, chromedp.Evaluate[string](`[`+strings.Join([]string{
		`'` + mac(boards[0]) + `'`, `'` + mac(boards[1]) + `'`, `'` + mac(boards[3]) + `'`, `'` + mac(boards[9]) + `'`,
	}, ",")+`].map(function(m){return getComputedStyle(document.querySelector('.tile[data-mac="'+m+'"]')).backgroundColor}).join(' ')`))
	if want := "rgb(26, 127, 55) rgb(11, 107, 203) rgb(198, 40, 40) rgb(110, 119, 129)"; err != nil || colours != want {
		t.Errorf("tile colours (confirmed, flashing, refused, waiting) %q, want %q (%v)", colours, want, err)
	}
	progress, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#progress`)))
	if progress != "1 / 4" {
		t.Errorf("progress %q, want 1 / 4", progress)
	}
	overflow, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`document.documentElement.scrollWidth - window.innerWidth`))
	if err != nil || overflow > 0 {
		t.Errorf("at %d px the station scrolls sideways by %.0f px (%v)", width, overflow, err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(artifactsDir(t), fmt.Sprintf("station-%dpx.png", width))
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("bar %.0f%% -> %.0f%%; screenshot %s", first, second, shot)
}

// TestReportFitsA4AndAPhone opens a batch report with long reasons in
// headless Chromium: at the width of A4 portrait inside its margins
// (186 mm, 703 px) no cell of the boards' table overflows (reasons wrap
// inside their cell) and the table is no wider than the page, on screen
// and with the print stylesheet, and it prints to an A4 PDF; at a phone's
// width (390 px) nothing scrolls sideways. Screenshots and the PDF land in
// the artifacts folder.
func TestReportFitsA4AndAPhone(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		skipOrFail(t, "needs Debian's chromium (apt-get install chromium)")
	}
	t0 := time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC)
	b := store.Batch{Name: "tray-42", Image: "customers/acme/production/sensor-node-esp32s3-release.bin", Expect: 12, Customer: "ACME Industrial Sensors GmbH", Order: "PO-2026-000123", Opened: t0,
		ImageVersion: "12.4.1-rc3", ImageMD5: "fedcba9876543210fedcba9876543210", ImageSHA256: strings.Repeat("ab", 32)}
	var devs []store.BatchDevice
	for i := 0; i < 12; i++ {
		d := store.BatchDevice{Batch: b.Name, MAC: fmt.Sprintf("24:0A:C4:00:10:%02X", i), Family: "ESP32", Chip: "ESP32-S3-WROOM-1-N16R8", Revision: "0.2", FlashSize: 16 << 20,
			BeforeImage: "customers/acme/production/sensor-node-esp32s3-previous.bin", BeforeVersion: "12.3.0", Slot: fmt.Sprint(i + 1),
			AfterImage: b.Image, AfterVersion: b.ImageVersion, Started: t0, Ended: t0.Add(40 * time.Second), Attempts: 1, Result: store.ResultFlashed}
		if i%3 == 1 {
			d.Result = store.ResultFailed
			d.Reason = "sensor-node-esp32s3-release.bin at 0x10000: flash block 187 of 1024 at 0x5ac00: command 0x03 failed: 0x07, invalid CRC in message; port closed: read /dev/serial/by-path/platform-fd500000.pcie-pci-0000:01:00.0-usb-0:1.3.4:1.0-port0: input/output error"
		}
		devs = append(devs, d)
	}
	var page bytes.Buffer
	if err := report.New(b, devs, t0.Add(time.Hour)).HTML(&page); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "report.html")
	os.WriteFile(file, page.Bytes(), 0o644)
	for _, width := range []int{703, 390} {
		t.Run(strconv.Itoa(width)+"px", func(t *testing.T) {
			ctx := browser(t, chromium, width)
			if err := chromedp.Do(ctx, chromedp.EmulateViewport(int64(width), 1000), chromedp.Navigate("file://"+file), chromedp.WaitVisible(chromedp.CSS(`#devices`))); err != nil {
				t.Fatal(err)
			}
			sideways, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`document.documentElement.scrollWidth - window.innerWidth`))
			if err != nil || sideways > 0 {
				t.Errorf("the page scrolls %v px sideways (%v)", sideways, err)
			}
			over, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`Array.from(document.querySelectorAll('#devices td')).filter(function(td){return td.scrollWidth > td.clientWidth + 1;}).length`))
			if err != nil || over > 0 {
				t.Errorf("%v cells overflow (%v)", over, err)
			}
			if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
				os.WriteFile(filepath.Join(artifactsDir(t), fmt.Sprintf("report-%dpx.png", width)), png, 0o644)
			}
			if width != 703 {
				return
			}
			// As printed: the print stylesheet applied, then to PDF on A4.
			if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
				_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Media: "print"})
				return err
			})); err != nil {
				t.Fatal(err)
			}
			over, err = chromedp.Run(ctx, chromedp.Evaluate[float64](`Array.from(document.querySelectorAll('#devices td')).filter(function(td){return td.scrollWidth > td.clientWidth + 1;}).length`))
			if err != nil || over > 0 {
				t.Errorf("printed: %v cells overflow (%v)", over, err)
			}
			pdf, err := chromedp.Run(ctx, chromedp.PrintToPDF(chromedp.PDFPaper(chromedp.PaperA4), chromedp.PDFMargin(0)))
			if err != nil || !bytes.HasPrefix(pdf, []byte("%PDF")) {
				t.Fatalf("print to PDF: %v", err)
			}
			os.WriteFile(filepath.Join(artifactsDir(t), "report-a4.pdf"), pdf, 0o644)
		})
	}
}

// withPassword has every request of the browser carry the admin password,
// the page's own polls and posts included.
func withPassword(ctx context.Context, t *testing.T) {
	t.Helper()
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("tech:"+pagePassword))
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": auth}}); err != nil {
		t.Fatal(err)
	}
}

// until evaluates js (a boolean expression) every 200 ms until it is
// true, for up to 15 s; false if it never was.
func until(ctx context.Context, t *testing.T, js string) bool {
	t.Helper()
	for i := 0; i < 75; i++ {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false
}

func cellText(ctx context.Context, t *testing.T, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(function(){var e=document.querySelector(`+strconv.Quote(sel)+`);return e?e.textContent.trim():'';})()`))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestStatusPageFollowsADownloadWithoutReload loads the page once at a
// phone's width and a desktop's and watches a device download an image:
// its row says "downloading" with a percentage that grows, then "sent"
// once the last byte is out, the downloads table and the summary strip
// follow, and the page never reloads (a mark set in it survives). A
// device whose download was cut off comes first although another was
// seen after it.
func TestStatusPageFollowsADownloadWithoutReload(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		skipOrFail(t, "needs Debian's chromium (apt-get install chromium)")
	}
	for _, width := range []int{390, 1280} {
		t.Run(strconv.Itoa(width)+"px", func(t *testing.T) { liveAt(t, chromium, width) })
	}
}

func liveAt(t *testing.T, chromium string, width int) {
	dir, v1, _, big := fleetCatalog(t)
	r := start(t, "--catalog", dir, "--admin-password", pagePassword)
	api := "http://tech:" + pagePassword + "@" + r.addr

	// A: cut off after 64 KB of 12 MB. B: updated whole, seen after A.
	cut := emu.New(emu.ESP32v30)
	cut.STAMAC, cut.FreeSpace = "24:0A:C4:00:00:A1", 16<<20
	conn, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.Write(cut.UpdateRequest(r.addr, "/cam.bin"))
	io.ReadFull(conn, make([]byte, 64<<10))
	conn.(*net.TCPConn).SetLinger(0)
	conn.Close()
	for i := 0; i < 100 && !strings.Contains(getBody(t, api+"/api/devices?state=cut-off"), cut.STAMAC); i++ {
		time.Sleep(100 * time.Millisecond)
	}
	seen := emu.New(emu.ESP8266v31)
	seen.STAMAC, seen.Running, seen.Source = "5C:CF:7F:00:00:B2", v1, net.IPv4(127, 10, 0, 2)
	if res := seen.Update(r.addr, "/update"); res.Outcome != emu.OK {
		t.Fatalf("update: %v", res)
	}

	ctx := browser(t, chromium, width)
	withPassword(ctx, t)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(int64(width), 900), chromedp.Navigate("http://"+r.addr+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#devices tr[data-mac]`))); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.__notReloaded = 1`)); err != nil {
		t.Fatal(err)
	}
	first := `document.querySelector('#devices tbody tr').getAttribute('data-mac')`
	if got, _ := chromedp.Run(ctx, chromedp.Evaluate[string](first)); got != cut.STAMAC {
		t.Errorf("first device row is %s; the cut-off device %s should lead", got, cut.STAMAC)
	}
	if s := cellText(ctx, t, "#problems"); !strings.HasPrefix(s, "1 need attention") {
		t.Errorf("summary strip says %q", s)
	}

	// C downloads the 12 MB image at about 320 KB/s, then all at once.
	dev := emu.New(emu.ESP32v30)
	dev.STAMAC, dev.FreeSpace = "24:0A:C4:00:00:C3", 16<<20
	dl, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Close()
	dl.Write(dev.UpdateRequest(r.addr, "/cam.bin"))
	br := bufio.NewReader(dl)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("download: %v %v", resp, err)
	}
	fast := make(chan struct{})
	got := make(chan []byte, 1)
	go func() {
		var body bytes.Buffer
		for {
			select {
			case <-fast:
				io.Copy(&body, resp.Body)
				got <- body.Bytes()
				return
			case <-time.After(100 * time.Millisecond):
			}
			if _, err := io.CopyN(&body, resp.Body, 32<<10); err != nil {
				got <- body.Bytes()
				return
			}
		}
	}()
	row := `#devices tr[data-mac="` + dev.STAMAC + `"] td.update`
	if !until(ctx, t, `(document.querySelector('`+row+`')||{textContent:''}).textContent.indexOf('downloading cam.bin') === 0`) {
		t.Fatalf("the device row never said downloading: %q", cellText(ctx, t, row))
	}
	pct := func() int {
		f := strings.Fields(cellText(ctx, t, row))
		n, _ := strconv.Atoi(strings.TrimSuffix(f[len(f)-1], "%"))
		return n
	}
	p1 := pct()
	p2 := p1
	for i := 0; i < 30 && p2 <= p1; i++ {
		time.Sleep(300 * time.Millisecond)
		p2 = pct()
	}
	if p2 <= p1 {
		t.Errorf("the row's percentage did not grow: %d%% then %d%%", p1, p2)
	}
	if s := cellText(ctx, t, "#downloads-now"); !strings.HasPrefix(s, "1 downloading now") {
		t.Errorf("summary strip says %q while a download runs", s)
	}
	close(fast)
	if b := <-got; !bytes.Equal(b, big) {
		t.Fatalf("the download got %d bytes, not the image's %d", len(b), len(big))
	}
	if !until(ctx, t, `(document.querySelector('`+row+`')||{textContent:''}).textContent.indexOf('sent (cam.bin)') === 0`) {
		t.Errorf("after the download the row says %q, not sent", cellText(ctx, t, row))
	}
	if !until(ctx, t, `document.querySelector('#downloads tr.none') !== null`) {
		t.Errorf("the downloads table still lists a download that ended")
	}
	if s := cellText(ctx, t, "#downloads-now"); !strings.HasPrefix(s, "0 downloading now") {
		t.Errorf("summary strip says %q after the download", s)
	}
	if v, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.__notReloaded || 0`)); err != nil || v != 1 {
		t.Errorf("the page reloaded (mark %d, %v)", v, err)
	}
	overflow, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`document.documentElement.scrollWidth - window.innerWidth`))
	if err != nil || overflow > 0 {
		t.Errorf("at %d px the page scrolls sideways by %.0f px (%v)", width, overflow, err)
	}
	// MACs and IPs are one line each: no "127./0.0./1".
	wrapped, err := chromedp.Run(ctx, chromedp.Evaluate[int](`Array.from(document.querySelectorAll('td.mono')).filter(function(td){var r=document.createRange();r.selectNodeContents(td);return r.getClientRects().length>1;}).length`))
	if err != nil || wrapped > 0 {
		t.Errorf("%d MAC, IP or size cells wrap mid-string (%v)", wrapped, err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err == nil {
		os.WriteFile(filepath.Join(artifactsDir(t), fmt.Sprintf("status-live-%dpx.png", width)), png, 0o644)
	}
	t.Logf("row %d%% -> %d%%, then sent; no reload", p1, p2)
}

// TestUploadThroughThePage uploads an image from the page on a phone, as a
// technician would: it is in the catalog table without a reload and a
// device downloads it; a malformed image is refused with its reason on
// the page and leaves no file in the catalog folder.
func TestUploadThroughThePage(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		skipOrFail(t, "needs Debian's chromium (apt-get install chromium)")
	}
	dir, _, _, _ := fleetCatalog(t)
	r := start(t, "--catalog", dir, "--admin-password", pagePassword)
	good, err := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 100 << 10, Project: "meter", Version: "3.0.0", Seed: 31})
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "meter-3.0.0.bin"), good, 0o644)
	os.WriteFile(filepath.Join(src, "broken.bin"), append([]byte{0xE9, 0x07}, bytes.Repeat([]byte{1}, 9000)...), 0o644)

	ctx := browser(t, chromium, 390)
	withPassword(ctx, t)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 900), chromedp.Navigate("http://"+r.addr+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#upload button`))); err != nil {
		t.Fatal(err)
	}
	upload := func(name string) string {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById('notice').hidden = true`)); err != nil {
			t.Fatal(err)
		}
		if err := chromedp.Do(ctx, chromedp.SetUploadFiles(chromedp.CSS(`#upload input[type=file]`), []string{filepath.Join(src, name)}),
			chromedp.Click(chromedp.CSS(`#upload button`))); err != nil {
			t.Fatal(err)
		}
		if !until(ctx, t, `!document.getElementById('notice').hidden`) {
			t.Fatalf("no answer on the page for %s", name)
		}
		return cellText(ctx, t, "#notice")
	}
	if s := upload("meter-3.0.0.bin"); !strings.Contains(s, "meter-3.0.0.bin (ESP8266 image 3.0.0") || !strings.Contains(s, "devices can fetch it now") {
		t.Errorf("the page says %q after a good upload", s)
	}
	if !until(ctx, t, `document.querySelector('#catalog tr[data-path="meter-3.0.0.bin"]') !== null`) {
		t.Errorf("the uploaded image is not in the page's catalog table")
	}
	dev := emu.New(emu.ESP8266v31)
	dev.STAMAC = "5C:CF:7F:00:00:D1"
	if res := dev.Update(r.addr, "/meter-3.0.0.bin"); res.Outcome != emu.OK || !bytes.Equal(res.Image, good) {
		t.Errorf("a device downloading the uploaded image: %v", res)
	}
	if s := upload("broken.bin"); !strings.Contains(s, "broken.bin refused: malformed firmware image") {
		t.Errorf("the page says %q after a malformed upload", s)
	}
	if extra := catalogLeftovers(t, dir, "cam.bin", "meter-1.0.0.bin", "meter-1.1.0.bin", "meter-3.0.0.bin"); len(extra) > 0 {
		t.Errorf("the refused upload left %v in the catalog folder", extra)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err == nil {
		os.WriteFile(filepath.Join(artifactsDir(t), "status-upload-390px.png"), png, 0o644)
	}
}
