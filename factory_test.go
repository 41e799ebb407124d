package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"image/png"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"

	"otabox/appliance/emu"
	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
	"otabox/appliance/store"
)

// benchCatalog is a factory's catalog: the production image and the
// provisioning sketch the boards arrive with.
func benchCatalog(t *testing.T) (dir string, prod, sketch []byte) {
	t.Helper()
	dir = t.TempDir()
	var err error
	if prod, err = imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 300 << 10, Project: "sensor", Version: "2.0.0", Seed: 21}); err != nil {
		t.Fatal(err)
	}
	if sketch, err = imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 40 << 10, Project: "provision", Version: "0.1.0", Seed: 22}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "prod.bin"), prod, 0o644)
	os.WriteFile(filepath.Join(dir, "provision.bin"), sketch, 0o644)
	return dir, prod, sketch
}

// otaboxCmd runs an otabox command to its end and returns its stdout.
func otaboxCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(otabox, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("otabox %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), err
}

// board is one board of the tray and what it does on the bench.
type board struct {
	dev      *emu.Device
	fate     string // what the board does: the result the record must show
	attempts int
}

// wifiTray makes n boards: every tenth board's fate is fixed by its index, so
// that a tray of 50 holds five of each trouble. 3: an ESP32 on an ESP8266
// tray (refused); 5: loses power mid-download and is taken off the bench
// (cut-off); 7: loses power mid-download, then comes back and finishes
// (confirmed on its second attempt); 9: flashed but never reboots
// (waiting). The rest provision and confirm.
func wifiTray(sketch []byte, n int) []*board {
	var out []*board
	for i := 0; i < n; i++ {
		mac := macN("5C:CF:7F", 0x100+i)
		b := &board{dev: emu.NewProvisioner(emu.ESP8266v31, mac), fate: "confirmed", attempts: 1}
		b.dev.Running, b.dev.Source = sketch, net.IPv4(127, 30, byte(i/200), byte(1+i%200))
		switch i % 10 {
		case 3:
			b.dev = emu.NewProvisioner(emu.ESP32v30, macN("24:0A:C4", 0x100+i))
			b.dev.Source = net.IPv4(127, 30, byte(i/200), byte(1+i%200))
			b.fate, b.attempts = "refused", 0
		case 5:
			b.dev.CutAfter, b.fate = 64<<10, "cut-off"
		case 7:
			b.dev.CutAfter, b.attempts = 64<<10, 2
		case 9:
			b.fate = "waiting"
		}
		out = append(out, b)
	}
	return out
}

// run does what the board does with the provisioning sketch.
func (b *board) run(t *testing.T, addr string) {
	reboot := b.fate != "waiting"
	p := b.dev.Provision(addr, "/update", reboot)
	if b.attempts == 2 { // power back: the sketch starts over
		if p.Update.Outcome != emu.Failed {
			t.Errorf("%s: the cut download ended %v", b.dev.STAMAC, p.Update)
		}
		p = b.dev.Provision(addr, "/update", true)
	}
	switch b.fate {
	case "confirmed":
		if p.Update.Outcome != emu.OK || p.CheckIn == nil || p.CheckIn.Outcome != emu.NoUpdates {
			t.Errorf("%s: update %v, check-in %v", b.dev.STAMAC, p.Update, p.CheckIn)
		}
	case "refused":
		if p.Update.Status != http.StatusForbidden {
			t.Errorf("%s: %v, want 403", b.dev.STAMAC, p.Update)
		}
	case "cut-off":
		if p.Update.Outcome != emu.Failed || !strings.HasPrefix(p.Update.Error, "power lost") {
			t.Errorf("%s: %v", b.dev.STAMAC, p.Update)
		}
	case "waiting":
		if p.Update.Outcome != emu.OK || p.CheckIn != nil {
			t.Errorf("%s: %v", b.dev.STAMAC, p.Update)
		}
	}
}

// runTray runs boards, at most 10 at a time.
func runTray(t *testing.T, addr string, boards []*board) {
	var wg sync.WaitGroup
	slots := make(chan struct{}, 10)
	for _, b := range boards {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer func() { <-slots; wg.Done() }()
			b.run(t, addr)
		}()
	}
	wg.Wait()
}

func mac(b *board) string { return b.dev.STAMAC }

// TestFactoryBatchOf50 is the factory bench end to end: a batch opened
// from the command line, 50 provisioning boards (10 at a time; some cut
// off mid-download, some refused, some never come back), otabox killed
// and restarted in the middle; then the report (CLI and API), the station
// page and the labels must each say what every board did.
func TestFactoryBatchOf50(t *testing.T) {
	dir, prod, sketch := benchCatalog(t)
	data := t.TempDir()
	r := startData(t, data, "--catalog", dir)
	// Opened while the server runs: it applies from the next check-in.
	out, err := otaboxCmd(t, "batch", "start", "tray-1", "--image", "prod.bin", "--expect", "50", "--catalog", dir, "--data-dir", data,
		"--customer", "ACME", "--order", "PO-7", "--note", "first article")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "batch tray-1 open: every device asking /update gets prod.bin 2.0.0") {
		t.Errorf("batch start says %q", out)
	}
	boards := wifiTray(sketch, 50)
	runTray(t, r.addr, boards[:25])

	// kill -9 between two waves, and start again on the same record.
	r.cmd.Process.Signal(syscall.SIGKILL)
	r.cmd.Wait()
	r = startData(t, data, "--catalog", dir)
	runTray(t, r.addr, boards[25:])

	// A board moved to another tray position (another address) checks in
	// again: still one board.
	moved := boards[0].dev
	moved.Source = net.IPv4(127, 31, 0, 1)
	if res := moved.Update(r.addr, "/update"); res.Outcome != emu.NoUpdates {
		t.Errorf("moved board: %v", res)
	}

	prodMD5 := func(d *emu.Device) string {
		img, _ := espimage.Parse(prod)
		return img.Digests.RunningMD5[d.FlashMode&3]
	}
	want := map[string]*board{}
	count := map[string]int{}
	for _, b := range boards {
		want[mac(b)] = b
		count[b.fate]++
	}

	t.Run("report csv", func(t *testing.T) {
		out, err := otaboxCmd(t, "report", "tray-1", "--format", "csv", "--data-dir", data)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		col := map[string]int{}
		for i, h := range rows[0] {
			col[h] = i
		}
		if len(rows) != 51 {
			t.Fatalf("%d rows, want 50 boards", len(rows)-1)
		}
		for _, row := range rows[1:] {
			get := func(k string) string { return row[col[k]] }
			b := want[get("mac")]
			if b == nil {
				t.Errorf("report row for a board that was not on the tray: %v", row)
				continue
			}
			if get("result") != b.fate || get("attempts") != strconv.Itoa(b.attempts) {
				t.Errorf("%s: result %s after %s attempts, the board was %s after %d", get("mac"), get("result"), get("attempts"), b.fate, b.attempts)
			}
			if get("customer") != "ACME" || get("order") != "PO-7" || get("note") != "first article" || get("batch") != "tray-1" {
				t.Errorf("%s: operator fields %v", get("mac"), row)
			}
			switch b.fate {
			case "confirmed":
				if get("after_image") != "prod.bin" || get("after_version") != "2.0.0" || get("after_md5") != prodMD5(b.dev) ||
					get("bytes") != strconv.Itoa(len(prod)) || get("before_image") != "provision.bin" || get("before_version") != "0.1.0" ||
					get("chip") != "ESP8266EX" || get("flash_size") != "4194304" || get("duration_s") == "" {
					t.Errorf("confirmed board %s: %v", get("mac"), row)
				}
			case "refused":
				if !strings.Contains(get("reason"), "prod.bin is an ESP8266 image, the device is an ESP32") || get("chip") != "ESP32-D0WD-V3" || get("revision") != "3" {
					t.Errorf("refused board %s: %v", get("mac"), row)
				}
			case "cut-off":
				if n, _ := strconv.Atoi(get("bytes")); n <= 0 || n >= len(prod) || !strings.Contains(get("reason"), "cut off") {
					t.Errorf("cut-off board %s: %v", get("mac"), row)
				}
			case "waiting":
				if get("bytes") != strconv.Itoa(len(prod)) || get("after_md5") != "" {
					t.Errorf("waiting board %s: %v", get("mac"), row)
				}
			}
		}
		if moved := rows[1:]; len(moved) == 0 {
			t.Fatal("no rows")
		}
	})

	t.Run("api report json", func(t *testing.T) {
		var rep struct {
			Batch struct {
				Seen      int            `json:"seen"`
				Confirmed int            `json:"confirmed"`
				Results   map[string]int `json:"results"`
				Expect    int            `json:"expect"`
			} `json:"batch"`
			Devices []struct {
				MAC, IP, Result string
			} `json:"devices"`
		}
		if err := json.Unmarshal([]byte(getBody(t, "http://"+r.addr+"/api/batches/tray-1/report.json")), &rep); err != nil {
			t.Fatal(err)
		}
		if rep.Batch.Seen != 50 || rep.Batch.Expect != 50 || rep.Batch.Confirmed != count["confirmed"] {
			t.Errorf("summary %+v, want 50 seen, %d confirmed", rep.Batch, count["confirmed"])
		}
		for fate, n := range count {
			if rep.Batch.Results[fate] != n {
				t.Errorf("%s: %d in the summary, %d boards did that", fate, rep.Batch.Results[fate], n)
			}
		}
		for _, d := range rep.Devices {
			if d.MAC == mac(boards[0]) && d.IP != "127.31.0.1" {
				t.Errorf("the moved board's address %s, want its new one", d.IP)
			}
		}
	})

	t.Run("api report csv, html and label sheet", func(t *testing.T) {
		resp, err := http.Get("http://" + r.addr + "/api/batches/tray-1/report.csv")
		if err != nil {
			t.Fatal(err)
		}
		rows, err := csv.NewReader(resp.Body).ReadAll()
		resp.Body.Close()
		if err != nil || len(rows) != 51 || resp.Header.Get("Content-Type") != "text/csv; charset=utf-8" {
			t.Errorf("report.csv: %d rows, %q, %v", len(rows), resp.Header.Get("Content-Type"), err)
		}
		page := getBody(t, "http://"+r.addr+"/api/batches/tray-1/report.html")
		if !strings.Contains(page, "size: A4") || strings.Count(page, "<tr data-mac=") != 50 || !strings.Contains(page, "PO-7") {
			t.Error("report.html is not the A4 report of 50 boards")
		}
		sheet := getBody(t, "http://"+r.addr+"/api/batches/tray-1/labels")
		if n := strings.Count(sheet, `<div class="label"`); n != count["confirmed"] {
			t.Errorf("label sheet has %d labels, want one per confirmed board (%d)", n, count["confirmed"])
		}
		if resp, _ := http.Get("http://" + r.addr + "/api/batches/tray-9/report.csv"); resp == nil || resp.StatusCode != http.StatusNotFound {
			t.Errorf("a batch that does not exist: %v", resp)
		}
	})

	t.Run("station page", func(t *testing.T) {
		page := getBody(t, "http://"+r.addr+"/station?batch=tray-1&fragment=1")
		if !strings.Contains(page, fmt.Sprintf(`id="progress">%d / 50<`, count["confirmed"])) {
			t.Errorf("station progress is not %d / 50:\n%.600s", count["confirmed"], page)
		}
		for fate, n := range count {
			if got := strings.Count(page, `data-result="`+fate+`"`); got != n {
				t.Errorf("%d %s tiles, %d boards did that", got, fate, n)
			}
		}
		first := page[strings.Index(page, `data-result="`)+13:]
		if r := first[:strings.IndexByte(first, '"')]; r != "cut-off" && r != "refused" {
			t.Errorf("the first tile is %s: boards needing attention sort first", r)
		}
	})

	t.Run("labels decode", func(t *testing.T) {
		for _, b := range []*board{boards[0], boards[3]} {
			resp, err := http.Get("http://" + r.addr + "/api/batches/tray-1/labels/" + mac(b) + ".png")
			if err != nil {
				t.Fatal(err)
			}
			img, err := png.Decode(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			bmp, _ := gozxing.NewBinaryBitmapFromImage(img)
			res, err := qrcode.NewQRCodeReader().Decode(bmp, nil)
			if err != nil {
				t.Fatalf("%s: label does not decode: %v", mac(b), err)
			}
			for _, want := range []string{"MAC: " + mac(b), "BATCH: tray-1", "IMAGE: prod.bin", "RESULT: " + b.fate} {
				if !strings.Contains(res.GetText(), want) {
					t.Errorf("%s: label says %q, lacks %q", mac(b), res.GetText(), want)
				}
			}
		}
		sheet, err := otaboxCmd(t, "report", "tray-1", "--format", "labels", "--data-dir", data)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(sheet, `<div class="label"`); n != count["confirmed"] {
			t.Errorf("label sheet has %d labels, want one per confirmed board (%d)", n, count["confirmed"])
		}
		all, err := otaboxCmd(t, "report", "tray-1", "--format", "labels", "--all-labels", "--data-dir", data)
		if n, marked := strings.Count(all, `<div class="label"`), strings.Count(all, "NOT PASSED</span>"); err != nil || n != 50 || marked != 50-count["confirmed"] {
			t.Errorf("--all-labels: %d labels, %d marked NOT PASSED (%v)", n, marked, err)
		}
	})

	t.Run("close", func(t *testing.T) {
		// Boards still waiting for their check-in keep the batch open
		// unless --force; the report then says they are unproven.
		if _, err := otaboxCmd(t, "batch", "close", "tray-1", "--data-dir", data); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%d still waiting", count["waiting"])) {
			t.Fatalf("close with %d boards waiting: %v", count["waiting"], err)
		}
		out, err := otaboxCmd(t, "batch", "close", "tray-1", "--force", "--data-dir", data)
		if err != nil || !strings.Contains(out, "batch tray-1 closed") {
			t.Fatalf("%q %v", out, err)
		}
		if page, _ := otaboxCmd(t, "report", "tray-1", "--format", "html", "--data-dir", data); !strings.Contains(page, fmt.Sprintf("closed with %d unproven", count["waiting"])) {
			t.Errorf("the report of a batch closed with boards waiting does not say so")
		}
		// A fresh board on the bench now gets the usual answer: nothing
		// newer for the provisioning sketch's project.
		late := emu.NewProvisioner(emu.ESP8266v31, "5C:CF:7F:00:0F:FF")
		late.Running, late.Source = sketch, net.IPv4(127, 32, 0, 1)
		if res := late.Update(r.addr, "/update"); res.Outcome != emu.NoUpdates {
			t.Errorf("after close: %v, want no update", res)
		}
		list, err := otaboxCmd(t, "batch", "list", "--data-dir", data)
		if err != nil || !strings.Contains(list, "tray-1") || !strings.Contains(list, "closed") {
			t.Errorf("batch list: %q %v", list, err)
		}
		if _, err := otaboxCmd(t, "batch", "start", "tray-1", "--image", "prod.bin", "--catalog", dir, "--data-dir", data); err == nil || !strings.Contains(err.Error(), "a batch name is used once") {
			t.Errorf("reopening a closed batch: %v", err)
		}
	})
}

// TestBatchesFailClosed: a batch does exactly what the operator wrote or
// says why it does not. A policy file's batch line opens the batch, for
// its group only; a batch line without a fleet record refuses the start;
// an image the catalog lacks is refused by `batch start` with a
// suggestion, and a batch whose image left the served catalog answers
// 304 with the reason, on the station page too; a second batch over the
// same devices, or a name used before, is refused.
func TestBatchesFailClosed(t *testing.T) {
	dir, _, sketch := benchCatalog(t)
	policy := filepath.Join(t.TempDir(), "policy")
	os.WriteFile(policy, []byte("group bench 5C:CF:7F:00:01:*\nbatch tray-p image prod.bin expect 2 group bench\n"), 0o644)

	t.Run("policy batch covers its group only", func(t *testing.T) {
		data := t.TempDir()
		r := startData(t, data, "--catalog", dir, "--policy", policy)
		if log := r.log.all.String() + readFor(r.log, time.Second); !strings.Contains(log, "batch opened by the policy") {
			t.Error("no log line says the policy opened the batch")
		}
		in := emu.NewProvisioner(emu.ESP8266v31, "5C:CF:7F:00:01:10")
		in.Running, in.Source = sketch, net.IPv4(127, 33, 0, 1)
		if p := in.Provision(r.addr, "/update", true); p.Update.Outcome != emu.OK || p.CheckIn == nil || p.CheckIn.Outcome != emu.NoUpdates {
			t.Errorf("board of group bench: %v %v", p.Update, p.CheckIn)
		}
		out := emu.NewProvisioner(emu.ESP8266v31, "5C:CF:7F:00:02:10")
		out.Running, out.Source = sketch, net.IPv4(127, 33, 0, 2)
		if res := out.Update(r.addr, "/update"); res.Outcome != emu.NoUpdates {
			t.Errorf("board outside the group: %v, want the usual no update", res)
		}
		rep, err := otaboxCmd(t, "report", "tray-p", "--data-dir", data)
		if err != nil || strings.Count(rep, "\n") != 2 || !strings.Contains(rep, "5C:CF:7F:00:01:10") {
			t.Errorf("report %q %v: want the one board of the group", rep, err)
		}
		// Closed, then the policy reloaded: the line does not reopen it.
		if _, err := otaboxCmd(t, "batch", "close", "tray-p", "--data-dir", data); err != nil {
			t.Fatal(err)
		}
		r.cmd.Process.Signal(syscall.SIGHUP)
		waitLog(t, r, "batch tray-p was closed at")
		next := emu.NewProvisioner(emu.ESP8266v31, "5C:CF:7F:00:01:11")
		next.Running, next.Source = sketch, net.IPv4(127, 33, 0, 4)
		if res := next.Update(r.addr, "/update"); res.Outcome != emu.NoUpdates {
			t.Errorf("a board of the group after the batch closed: %v, want the usual no update", res)
		}
	})

	t.Run("policy batch without a record", func(t *testing.T) {
		out, err := exec.Command(otabox, "serve", "--mdns=false", "--bind", "127.0.0.1", "--port", "0", "--catalog", dir, "--policy", policy, "--data-dir", "").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "batch needs the fleet record") {
			t.Errorf("started without a record for its batch: %v\n%s", err, out)
		}
	})

	t.Run("image not in the catalog", func(t *testing.T) {
		data := t.TempDir()
		_, err := otaboxCmd(t, "batch", "start", "tray-x", "--image", "prod-2.bin", "--catalog", dir, "--data-dir", data)
		if err == nil || !strings.Contains(err.Error(), `"prod-2.bin" is not a firmware image in the catalog`) || !strings.Contains(err.Error(), `did you mean "prod.bin"?`) {
			t.Errorf("batch start with a missing image: %v", err)
		}
		// Opened against a catalog that has it, served from one that
		// does not: devices are told why, and so is the operator.
		if _, err := otaboxCmd(t, "batch", "start", "tray-x", "--image", "prod.bin", "--catalog", dir, "--data-dir", data); err != nil {
			t.Fatal(err)
		}
		other := t.TempDir()
		os.WriteFile(filepath.Join(other, "provision.bin"), sketch, 0o644)
		r := startData(t, data, "--catalog", other)
		b := emu.NewProvisioner(emu.ESP8266v31, "5C:CF:7F:00:03:10")
		b.Running, b.Source = sketch, net.IPv4(127, 33, 0, 3)
		res := b.Update(r.addr, "/update")
		if res.Status != http.StatusNotModified {
			t.Errorf("batch image missing: %v, want 304", res)
		}
		if log := readFor(r.log, time.Second); !strings.Contains(log, "batch tray-x gives prod.bin, which is not in the catalog") {
			t.Errorf("the log does not say why:\n%s", log)
		}
		if page := getBody(t, "http://"+r.addr+"/station"); !strings.Contains(page, "prod.bin is not in the catalog: boards are answered 304") {
			t.Error("the station page does not say the batch image is missing")
		}
		rep, _ := otaboxCmd(t, "report", "tray-x", "--data-dir", data)
		if !strings.Contains(rep, `,held,"batch tray-x gives prod.bin, which is not in the catalog"`) {
			t.Errorf("report %q", rep)
		}
	})

	t.Run("overlap and reuse", func(t *testing.T) {
		data := t.TempDir()
		if _, err := otaboxCmd(t, "batch", "start", "a", "--image", "prod.bin", "--catalog", dir, "--data-dir", data); err != nil {
			t.Fatal(err)
		}
		_, err := otaboxCmd(t, "batch", "start", "b", "--image", "prod.bin", "--group", "bench", "--catalog", dir, "--data-dir", data)
		if err == nil || !strings.Contains(err.Error(), "batch a is open and covers every device") {
			t.Errorf("overlapping batch: %v", err)
		}
		_, err = otaboxCmd(t, "batch", "start", "a", "--image", "prod.bin", "--catalog", dir, "--data-dir", data)
		if err == nil || !strings.Contains(err.Error(), "a batch name is used once") {
			t.Errorf("name reused: %v", err)
		}
		if _, err := otaboxCmd(t, "batch", "close", "a", "--data-dir", data); err != nil {
			t.Fatal(err)
		}
		if _, err := otaboxCmd(t, "batch", "close", "a", "--data-dir", data); err == nil || !strings.Contains(err.Error(), "already closed") {
			t.Errorf("closing twice: %v", err)
		}
	})
}

// TestBenchPagesNeedThePassword: with --admin-password the station page,
// the batch API, the reports and the labels ask for it, as the status
// page does.
func TestBenchPagesNeedThePassword(t *testing.T) {
	pwfile := filepath.Join(t.TempDir(), "admin")
	os.WriteFile(pwfile, []byte("s3cret\n"), 0o600)
	dir, _, _ := benchCatalog(t)
	data := t.TempDir()
	if _, err := otaboxCmd(t, "batch", "start", "tray-a", "--image", "prod.bin", "--catalog", dir, "--data-dir", data); err != nil {
		t.Fatal(err)
	}
	r := startData(t, data, "--catalog", dir, "--admin-password-file", pwfile)
	for _, p := range []string{"/station", "/station?fragment=1", "/api/batches", "/api/batches/tray-a", "/api/batches/tray-a/report.csv",
		"/api/batches/tray-a/report.html", "/api/batches/tray-a/labels", "/api/batches/tray-a/labels/5C:CF:7F:00:00:01.png"} {
		for _, pw := range []string{"", "s3cret"} {
			req, _ := http.NewRequest("GET", "http://"+r.addr+p, nil)
			if pw != "" {
				req.SetBasicAuth("", pw)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if locked := resp.StatusCode == http.StatusUnauthorized; locked != (pw == "") {
				t.Errorf("GET %s with password %q: %d", p, pw, resp.StatusCode)
			}
		}
	}
}

// TestBatchStartUsesTheServicesCatalog: beside the installed service
// (its record and firmware/ in its state folder), `otabox batch start`
// and `otabox list` look at the firmware the service serves, not at the
// binary's embedded catalog, the batch goes into the service's record,
// and so do the boards `otabox flash` writes.
func TestBatchStartUsesTheServicesCatalog(t *testing.T) {
	svc := t.TempDir()
	os.MkdirAll(filepath.Join(svc, "firmware"), 0o755)
	prod, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 40 << 10, Project: "prod", Version: "3.0.0", Seed: 90})
	os.WriteFile(filepath.Join(svc, "firmware", "prod.bin"), prod, 0o644)
	st, err := store.Open(svc, store.Options{}) // the service has run once: its record is there
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	cmd := exec.Command(otabox, "batch", "start", "tray-7", "--image", "prod.bin")
	cmd.Env = append(os.Environ(), "OTABOX_SERVICE_DIR="+svc)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "batch tray-7 open") {
		t.Fatalf("batch start beside the service: %v\n%s", err, out)
	}
	list := exec.Command(otabox, "list")
	list.Env = cmd.Env
	if out, err := list.CombinedOutput(); err != nil || !strings.Contains(string(out), "prod.bin") {
		t.Errorf("list beside the service: %v\n%s", err, out)
	}
	bl := exec.Command(otabox, "batch", "list")
	bl.Env = cmd.Env
	if out, err := bl.CombinedOutput(); err != nil || !strings.Contains(string(out), "tray-7") {
		t.Errorf("batch list beside the service: %v\n%s", err, out)
	}
	_, port := serveBoard(t, "ESP8266", 0x77)
	fl := exec.Command(otabox, "flash", "--port", "1="+port, "0="+filepath.Join(svc, "firmware", "prod.bin"))
	fl.Env = cmd.Env
	if out, err := fl.CombinedOutput(); err != nil || !strings.Contains(string(out), "recorded 1 board in "+filepath.Join(svc, "otabox.db")) {
		t.Errorf("flash beside the service: %v\n%s", err, out)
	}
}
