package main

// The fleet record's promises, kept by the real binary over loopback: the
// README's "The fleet record" section says what each test holds it to.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	mrand "math/rand/v2"
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

	"otabox/appliance/emu"
)

type recordDevice struct {
	MAC, State, Sent, Reason, Filesystem string
}

// recorded is `otabox devices --json` for data, by MAC.
func recorded(t *testing.T, data string) map[string]recordDevice {
	t.Helper()
	cmd := exec.Command(otabox, "devices", "--json", "--limit", "1000000", "--data-dir", data)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("otabox devices: %v\n%s", err, stderr.String())
	}
	var devs []recordDevice
	if err := json.Unmarshal(out, &devs); err != nil {
		t.Fatalf("otabox devices --json: %v\n%s", err, out)
	}
	m := map[string]recordDevice{}
	for _, d := range devs {
		m[d.MAC] = d
	}
	return m
}

func macN(prefix string, n int) string {
	return fmt.Sprintf("%s:%02X:%02X:%02X", prefix, byte(n>>16), byte(n>>8), byte(n))
}

// startDownload sends a device's firmware GET and reads the status line
// and the first body byte. It reports whether a body byte arrived.
func startDownload(addr string, d *emu.Device, target string) (net.Conn, bool) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, false
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(d.UpdateRequest(addr, target)); err != nil {
		return conn, false
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		return conn, false
	}
	_, err = br.ReadByte()
	return conn, err == nil
}

// startBody sends a device's firmware GET and reads the status line; it
// reports whether a 200 came, with the reader the body follows in.
func startBody(addr string, d *emu.Device, target string) (net.Conn, *bufio.Reader, bool) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, nil, false
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(d.UpdateRequest(addr, target)); err != nil {
		return conn, nil, false
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	return conn, br, err == nil && resp.StatusCode == 200
}

// TestKill9NeverLosesACompletedDownload: kill -9 at random moments while
// 12 devices download, 20 times over one data dir; some devices read the
// whole image, some stop part way. After every restart each MAC that
// completed a download (every byte, its MD5 checked) is in `otabox devices
// --json`: a decision's commit runs while the body streams, and only the
// last bytes wait for it (httpapi.HoldBack), so no device completes an
// image the record does not hold.
func TestKill9NeverLosesACompletedDownload(t *testing.T) {
	dir, v1, v2, _ := fleetCatalog(t)
	want := md5hex(v2)
	data := t.TempDir()
	completed := map[string]bool{}
	started := 0
	next := 0
	for kill := 0; kill < 20; kill++ {
		r := startData(t, data, "--catalog", dir, "--log", "error")
		var mu sync.Mutex
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for c := 0; c < 12; c++ {
			wg.Add(1)
			go func(c int) {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					d := emu.New(emu.ESP8266v31)
					d.Running = v1
					mu.Lock()
					next++
					d.STAMAC = macN("5C:CF:7F", next)
					mu.Unlock()
					conn, br, got := startBody(r.addr, d, "/meter-1.1.0.bin")
					if got {
						body := make([]byte, len(v2))
						whole := mrand.IntN(2) == 0
						n := len(v2)
						if !whole {
							n = 1 + mrand.IntN(n-1)
						}
						k, _ := io.ReadFull(br, body[:n])
						mu.Lock()
						started++
						if whole && k == n && md5hex(body) == want {
							completed[d.STAMAC] = true
						}
						mu.Unlock()
					}
					if conn != nil {
						conn.Close()
					}
				}
			}(c)
		}
		time.Sleep(time.Duration(50+mrand.IntN(400)) * time.Millisecond)
		r.cmd.Process.Signal(syscall.SIGKILL)
		r.cmd.Wait()
		close(stop)
		wg.Wait()
		have := recorded(t, data)
		lost := 0
		for mac := range completed {
			if _, ok := have[mac]; !ok {
				lost++
				t.Errorf("kill %d: %s completed its download and is not in the record", kill+1, mac)
			}
		}
		if lost > 0 {
			t.FailNow()
		}
	}
	t.Logf("%d kills, %d downloads started, %d completed, every completed one recorded", 20, started, len(completed))
	if len(completed) < 20 {
		t.Errorf("only %d downloads completed: the test did not exercise the record", len(completed))
	}
}

// TestLastBytesWaitForTheRecord: while the fleet record cannot commit (the
// test holds SQLite's write lock on otabox.db, as a stalled disk would), a
// download streams all but its last httpapi.HoldBack bytes and no more;
// once the lock goes the rest arrives and the download completes. Held
// past the store's wait, the last bytes are never sent: the device's
// download fails cleanly, the log says why, and /metrics counts it
// (otabox_downloads_total{outcome="withheld"}).
func TestLastBytesWaitForTheRecord(t *testing.T) {
	dir, v1, v2, _ := fleetCatalog(t)
	data := t.TempDir()
	r := startData(t, data, "--catalog", dir)
	lock := func() func() {
		t.Helper()
		// The box's own writer may hold the lock for a moment (committing the
		// previous download); wait for it as the box's connections do.
		db, err := sql.Open("sqlite", "file:"+filepath.Join(data, "otabox.db")+"?_pragma=busy_timeout(10000)")
		if err != nil {
			t.Fatal(err)
		}
		conn, err := db.Conn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.ExecContext(context.Background(), "BEGIN IMMEDIATE"); err != nil {
			t.Fatal(err)
		}
		return func() { conn.ExecContext(context.Background(), "ROLLBACK"); conn.Close(); db.Close() }
	}
	download := func(mac string) (net.Conn, *bufio.Reader) {
		t.Helper()
		d := emu.New(emu.ESP8266v31)
		d.STAMAC, d.Running = mac, v1
		conn, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(d.UpdateRequest(r.addr, "/meter-1.1.0.bin"))
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("download: %v %v", resp, err)
		}
		return conn, br
	}
	readFor := func(br *bufio.Reader, conn net.Conn, d time.Duration) ([]byte, error) {
		conn.SetReadDeadline(time.Now().Add(d))
		var got bytes.Buffer
		_, err := io.Copy(&got, br)
		return got.Bytes(), err
	}

	// Released in time: everything but the last HoldBack bytes, then the rest.
	unlock := lock()
	conn, br := download("5C:CF:7F:00:0F:01")
	part, _ := readFor(br, conn, time.Second)
	if len(part) != len(v2)-8192 {
		t.Errorf("with the record stalled the device got %d of %d bytes; want all but the last 8192", len(part), len(v2))
	}
	unlock()
	rest, _ := readFor(br, conn, 5*time.Second)
	if got := append(part, rest...); !bytes.Equal(got, v2) {
		t.Errorf("after the record came back the device has %d bytes, not the image's %d", len(got), len(v2))
	}
	conn.Close()

	// Held past the store's wait: the last bytes never go out.
	unlock = lock()
	conn, br = download("5C:CF:7F:00:0F:02")
	got, _ := readFor(br, conn, 12*time.Second)
	unlock()
	conn.Close()
	if len(got) != len(v2)-8192 {
		t.Errorf("with the record stalled past its wait the device got %d of %d bytes; want all but the last 8192, never the end", len(got), len(v2))
	}
	if line := waitLog(t, r, "no device completes an image the fleet record does not hold"); !strings.Contains(line, "the last 8192 bytes are withheld") {
		t.Errorf("the log does not say what was withheld: %s", line)
	}
	if m := getBody(t, "http://"+r.addr+"/metrics"); !strings.Contains(m, `otabox_downloads_total{outcome="withheld"} 1`) {
		t.Errorf("/metrics does not count the withheld download:\n%s", grepLines(m, "otabox_downloads_total"))
	}
}

// rssKB is the peak resident set of a process, from /proc.
func rssKB(t *testing.T, pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// TestPoisonedHeadersKeepTheFleet: 1,400 requests from the LAN, each with
// a fresh MAC and a 19,000-byte (or 12,000-byte, under the head limit)
// header value, leave the three real devices in the record across a
// restart, the process under 150 MB and the data dir under 64 MB.
func TestPoisonedHeadersKeepTheFleet(t *testing.T) {
	dir, v1, _, _ := fleetCatalog(t)
	data := t.TempDir()
	r := startData(t, data, "--catalog", dir, "--log", "error")
	real := []string{"5C:CF:7F:00:00:A1", "5C:CF:7F:00:00:A2", "5C:CF:7F:00:00:A3"}
	for i, mac := range real {
		d := emu.New(emu.ESP8266v31)
		d.STAMAC, d.Running, d.Source = mac, v1, net.IPv4(127, 9, 1, byte(i+1))
		if res := d.Update(r.addr, "/update"); res.Outcome != emu.OK {
			t.Fatalf("%s: %v", mac, res)
		}
	}
	var wg sync.WaitGroup
	for c := 0; c < 8; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for i := c; i < 1400; i += 8 {
				n := 19000
				if i%2 == 1 {
					n = 12000
				}
				req := fmt.Sprintf("GET /meter-1.1.0.bin HTTP/1.0\r\nHost: x\r\nUser-Agent: ESP8266-http-Update\r\nx-ESP8266-STA-MAC: %s\r\nx-ESP8266-AP-MAC: %s\r\nx-ESP8266-sdk-version: %s\r\n\r\n",
					macN("5C:CF:7F", 0x100000+i), strings.Repeat("A", n), strings.Repeat("v", 60))
				conn, err := net.Dial("tcp", r.addr)
				if err != nil {
					t.Error(err)
					return
				}
				conn.Write([]byte(req))
				io.Copy(io.Discard, conn)
				conn.Close()
			}
		}(c)
	}
	wg.Wait()
	rss := rssKB(t, r.cmd.Process.Pid)
	r.cmd.Process.Signal(syscall.SIGTERM)
	r.cmd.Wait()
	r2 := startData(t, data, "--catalog", dir, "--log", "error")
	have := recorded(t, data)
	for _, mac := range real {
		if d, ok := have[mac]; !ok || d.State != "sent" {
			t.Errorf("%s after the flood and a restart: %+v", mac, d)
		}
	}
	for mac, d := range have {
		if len(d.Reason) > 256 || len(mac) != 17 {
			t.Errorf("stored unbounded: %s reason of %d bytes", mac, len(d.Reason))
		}
	}
	size := dirSize(data)
	t.Logf("after 1,400 poisoned requests: %d devices recorded, peak RSS %d KB, data dir %d bytes", len(have), rss, size)
	if rss > 150<<10 {
		t.Errorf("peak RSS %d KB, promised under 150 MB", rss)
	}
	if size > 64<<20 {
		t.Errorf("data dir %d bytes, promised under 64 MB", size)
	}
	_ = r2
}

// TestShutdownRecordsWhatItCutOff: SIGTERM with a short grace during a
// slow download: the store closes only after the cut-off is recorded,
// with its byte count.
func TestShutdownRecordsWhatItCutOff(t *testing.T) {
	dir, _, _, _ := fleetCatalog(t)
	data := t.TempDir()
	r := startData(t, data, "--catalog", dir, "--grace", "1s")
	d := emu.New(emu.ESP32v30)
	d.STAMAC, d.FreeSpace = "24:0A:C4:00:00:5D", 16<<20
	conn, ok := startDownload(r.addr, d, "/cam.bin")
	if !ok {
		t.Fatal("download did not start")
	}
	defer conn.Close()
	// A slow reader: the 12 MB image cannot finish within the grace.
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := conn.Read(buf); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	time.Sleep(300 * time.Millisecond)
	r.cmd.Process.Signal(syscall.SIGTERM)
	log, err := waitExit(r)
	if err != nil {
		t.Logf("exit: %v", err)
	}
	out, err := exec.Command(otabox, "history", d.STAMAC, "--json", "--data-dir", data).Output()
	if err != nil {
		t.Fatal(err)
	}
	var evs []struct {
		Bytes, Size int64
		Completed   bool
		Reason      string
	}
	json.Unmarshal(out, &evs)
	if len(evs) != 1 || evs[0].Completed || evs[0].Bytes <= 0 || evs[0].Bytes >= evs[0].Size || !strings.Contains(evs[0].Reason, "cut off after") {
		t.Fatalf("history after a shutdown mid-download: %s", out)
	}
	if dev := recorded(t, data)[d.STAMAC]; dev.State != "cut-off" {
		t.Errorf("device %+v", dev)
	}
	if strings.Contains(log, "interrupted") {
		t.Error("the cut-off was left for the next start to guess")
	}
}

// waitExit reads the process's log to its end (the pipe reaches EOF when
// the process exits) and only then waits for it: cmd.Wait closes the
// pipe, and lines not read by then would be lost (it happened under load).
func waitExit(r *running) (string, error) {
	log := r.log.all.String() + drain(r.log)
	return log, r.cmd.Wait()
}

// drain returns the log lines not yet read, up to the end of the log.
func drain(lt *logTail) string {
	var b strings.Builder
	for l := range lt.lines {
		b.WriteString(l + "\n")
	}
	return b.String()
}

// TestDamagedRecordStillServes: random bytes written into the middle of
// otabox.db: otabox moves it aside, says so in one ERROR line, starts a
// fresh record and serves devices.
func TestDamagedRecordStillServes(t *testing.T) {
	dir, v1, _, _ := fleetCatalog(t)
	data := t.TempDir()
	r := startData(t, data, "--catalog", dir)
	for i := 0; i < 300; i++ {
		d := emu.New(emu.ESP8266v31)
		d.STAMAC, d.Running = macN("5C:CF:7F", i), v1
		d.Update(r.addr, "/meter-1.0.0.bin") // 304: it runs it
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	r.cmd.Wait()
	db := filepath.Join(data, "otabox.db")
	f, err := os.OpenFile(db, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	junk := make([]byte, fi.Size()/2)
	rand.Read(junk)
	f.WriteAt(junk, fi.Size()/4)
	f.Close()

	r2 := startData(t, data, "--catalog", dir)
	d := emu.New(emu.ESP8266v31)
	if res := d.Update(r2.addr, "/meter-1.1.0.bin"); res.Outcome != emu.OK {
		t.Fatalf("after damage: %v", res)
	}
	aside, _ := filepath.Glob(db + ".damaged-*")
	if len(aside) == 0 || !strings.Contains(r2.log.all.String(), "level=ERROR msg=\"store: the fleet record was damaged; moved it aside") {
		t.Errorf("aside %v; log:\n%s", aside, r2.log.all.String())
	}
	if _, ok := recorded(t, data)[d.STAMAC]; !ok {
		t.Error("the fresh record does not hold the new download")
	}
}

// TestDiskFullHoldsDownloadsBackUntilFreed: --data-dir on a 1 MB tmpfs in
// a private mount namespace, filled up. A download's decision cannot be
// committed, so each device gets all but the last 8 KiB and its update
// fails cleanly (no device completes an image the record does not hold);
// listings are still answered; the dropped records and the withheld
// downloads are counted and shown; once space is freed, downloads
// complete and are recorded again without a restart.
func TestDiskFullHoldsDownloadsBackUntilFreed(t *testing.T) {
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root for a tmpfs in a private mount namespace (CI runs as root)")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		skipOrFail(t, "needs unshare (util-linux)")
	}
	dir, v1, v2, _ := fleetCatalog(t)
	mnt := filepath.Join(t.TempDir(), "data")
	os.Mkdir(mnt, 0o755)
	r := startCmd(t, []string{"unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs -o size=1m tmpfs "$0" && exec "$@"`, mnt, otabox}, "--data-dir", mnt, "--catalog", dir)
	pid := r.cmd.Process.Pid
	inside := fmt.Sprintf("/proc/%d/root%s", pid, mnt) // the tmpfs, seen through otabox's namespace
	filler := filepath.Join(inside, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	f.Close()
	const devices = 20
	for i := 0; i < devices; i++ {
		d := emu.New(emu.ESP8266v31)
		d.STAMAC, d.Running = macN("5C:CF:7F", 0x200000+i), v1
		res := d.Update(r.addr, "/meter-1.1.0.bin")
		if res.Outcome == emu.OK || !strings.Contains(res.Error, fmt.Sprintf("%d of %d bytes", len(v2)-8192, len(v2))) {
			t.Fatalf("device %d on a full disk: %v; want its update to fail 8192 bytes short", i, res)
		}
	}
	if body := getBody(t, "http://"+r.addr+"/_catalog?op=list&path=."); !strings.Contains(body, "meter-1.1.0.bin") {
		t.Errorf("the catalog is not listed on a full disk: %s", body)
	}
	metrics := getBody(t, "http://"+r.addr+"/metrics")
	dropped := metricValue(metrics, "otabox_store_dropped_total")
	if dropped == 0 || metricValue(metrics, "otabox_store_healthy") != 0 {
		t.Fatalf("a full disk dropped %v records; healthy=%v", dropped, metricValue(metrics, "otabox_store_healthy"))
	}
	if w := metricValue(metrics, `otabox_downloads_total{outcome="withheld"}`); w != devices {
		t.Errorf("/metrics counts %v withheld downloads, want %d", w, devices)
	}
	if page := getBody(t, "http://"+r.addr+"/"); !strings.Contains(page, `id="store-fault"`) || !strings.Contains(page, "Downloads do not complete") {
		t.Error("the status page shows no banner saying downloads are held back")
	}
	os.Remove(filler)
	late := emu.New(emu.ESP8266v31)
	late.STAMAC = "5C:CF:7F:FF:FF:01"
	deadline := time.Now().Add(20 * time.Second)
	for {
		if res := late.Update(r.addr, "/meter-1.1.0.bin"); res.Outcome != emu.OK {
			t.Fatalf("after freeing space: %v", res)
		}
		if strings.Contains(getBody(t, "http://"+r.addr+"/api/devices?mac="+late.STAMAC), late.STAMAC) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("records did not resume without a restart:\n%s", r.log.all.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("%v records dropped and %d downloads withheld while the disk was full; writing and downloads resumed", dropped, devices)
}

func metricValue(text, name string) float64 {
	for _, l := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(l, name+" "); ok {
			v, _ := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v
		}
	}
	return -1
}

// skipOrFail skips a test this machine cannot run, visibly; under CI
// (CI=true), where .ci/run installs everything, it fails instead.
func skipOrFail(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("cannot run under CI: %s", why)
	}
	t.Skip(why)
}

// TestSecondSignalForcesExit: the first SIGTERM waits for running
// downloads (up to --grace); a second one says it is forcing the exit and
// exits at once.
func TestSecondSignalForcesExit(t *testing.T) {
	dir, _, _, _ := fleetCatalog(t)
	r := startData(t, t.TempDir(), "--catalog", dir, "--grace", "60s")
	d := emu.New(emu.ESP32v30)
	d.FreeSpace = 16 << 20
	conn, ok := startDownload(r.addr, d, "/cam.bin")
	if !ok {
		t.Fatal("download did not start")
	}
	defer conn.Close() // never read: the download cannot finish
	r.cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(300 * time.Millisecond)
	r.cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan string, 1)
	go func() { log, _ := waitExit(r); exited <- log }()
	select {
	case log := <-exited:
		if !strings.Contains(log, "second signal: forcing exit") {
			t.Errorf("no word of forcing:\n%s", log)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a second SIGTERM did not force the exit")
	}
}

// TestReadersFindTheServiceRecord: run on the box without flags, `otabox
// devices` reads the service's /var/lib/otabox when it holds a record,
// and says which file it read. (Needs root; it creates /var/lib/otabox
// only when the machine has none, and removes what it made.)
func TestReadersFindTheServiceRecord(t *testing.T) {
	const service = "/var/lib/otabox"
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root to create "+service)
	}
	if _, err := os.Stat(service); err == nil {
		t.Skipf("%s exists on this machine: a real service's record is not touched", service)
	}
	if err := os.MkdirAll(service, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(service) })
	r := startData(t, service)
	d := emu.New(emu.ESP8266v31)
	d.STAMAC = "5C:CF:7F:00:90:01"
	if res := d.Update(r.addr, "/blink-esp8266.bin"); res.Outcome != emu.OK {
		t.Fatalf("%v", res)
	}
	cmd := exec.Command(otabox, "devices")
	cmd.Dir = t.TempDir() // no ./otabox-data here
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "STATE_DIRECTORY=") && !strings.HasPrefix(kv, "OTABOX_DATA_DIR=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "otabox: reading /var/lib/otabox/otabox.db") || !strings.Contains(string(out), d.STAMAC) {
		t.Fatalf("%v\n%s", err, out)
	}
}

// checkIns makes n devices check in (/update, 304): n decisions, each
// committed before its answer.
func checkIns(t *testing.T, addr string, first, n int, running []byte) []string {
	t.Helper()
	var macs []string
	for i := 0; i < n; i++ {
		d := emu.New(emu.ESP8266v31)
		d.STAMAC, d.Running = macN("5C:CF:7F", first+i), running
		if res := d.Update(addr, "/update"); res.Status != 304 {
			t.Fatalf("check-in %d: %v", i, res)
		}
		macs = append(macs, d.STAMAC)
	}
	return macs
}

// kill9 stops otabox the hard way, at once.
func kill9(r *running) {
	r.cmd.Process.Signal(syscall.SIGKILL)
	r.cmd.Wait()
}

// lostLoudly checks that a started otabox says part of the record was
// lost: an ERROR line, otabox_store_healthy 0, the status page's banner.
func lostLoudly(t *testing.T, r *running, why string) {
	t.Helper()
	line := waitLog(t, r, "part of the fleet record was lost")
	if !strings.Contains(line, why) {
		t.Errorf("the ERROR line does not say %q: %s", why, line)
	}
	if m := getBody(t, "http://"+r.addr+"/metrics"); !strings.Contains(m, "otabox_store_healthy 0") {
		t.Error("otabox_store_healthy is not 0")
	}
	if page := getBody(t, "http://"+r.addr+"/"); !strings.Contains(page, "Part of the fleet record was lost") {
		t.Error("the status page shows no banner")
	}
}

// TestEmptyDatabaseBesideItsWALIsMovedAsideLoudly: an otabox.db emptied
// (0 bytes) beside a WAL holding the record, which SQLite would take as a
// new database and delete the WAL of, is moved aside with its WAL before
// SQLite opens anything: the 20 devices are in the moved-aside copy, the
// start is an ERROR, a banner and otabox_store_healthy 0, and devices are
// served.
func TestEmptyDatabaseBesideItsWALIsMovedAsideLoudly(t *testing.T) {
	dir, _, v2, _ := fleetCatalog(t)
	data := t.TempDir()
	r := startData(t, data, "--catalog", dir)
	macs := checkIns(t, r.addr, 0x100, 20, v2)
	kill9(r) // within the quiet second: the record is still in the WAL
	db := filepath.Join(data, "otabox.db")
	if fi, err := os.Stat(db + "-wal"); err != nil || fi.Size() <= 32 {
		t.Skipf("the WAL was already checkpointed (%v): nothing for this case to lose", err)
	}
	os.Truncate(db, 0)
	r = startData(t, data, "--catalog", dir)
	lostLoudly(t, r, "the database file was empty beside a")
	if list := emu.New(emu.ESP8266v31).Catalog(r.addr, "."); len(list.Firmwares) == 0 {
		t.Fatalf("devices are not served: %+v", list)
	}
	macs = append(macs, checkIns(t, r.addr, 0x180, 1, v2)...)
	kill9(r)
	// The WAL that held the 20 devices was kept, whole, beside the
	// emptied database it belonged to.
	aside, _ := filepath.Glob(db + ".lost-*-wal")
	if len(aside) != 1 {
		t.Fatalf("moved-aside WAL: %v", aside)
	}
	if fi, err := os.Stat(aside[0]); err != nil || fi.Size() <= 32 {
		t.Fatalf("the kept WAL: %v", err)
	}
	if have := recorded(t, data); len(have) != 1 || have[macs[len(macs)-1]].MAC == "" {
		t.Errorf("the fresh record holds %d devices, want the one that checked in since", len(have))
	}
}

// TestWALDeletedWhileRunningLosesNothing: the WAL deleted under a running
// otabox is seen within a second; what SQLite still holds of it goes into
// the database and the database is reopened, so a kill -9 after that
// loses none of the 40 devices.
func TestWALDeletedWhileRunningLosesNothing(t *testing.T) {
	dir, _, v2, _ := fleetCatalog(t)
	data := t.TempDir()
	r := startData(t, data, "--catalog", dir)
	db := filepath.Join(data, "otabox.db")
	macs := checkIns(t, r.addr, 0x200, 20, v2)
	os.Remove(db + "-wal")
	macs = append(macs, checkIns(t, r.addr, 0x300, 20, v2)...)
	waitLog(t, r, "WAL was deleted while otabox runs")
	time.Sleep(200 * time.Millisecond)
	kill9(r)
	have := recorded(t, data)
	for _, mac := range macs {
		if _, ok := have[mac]; !ok {
			t.Errorf("%s is not in the record", mac)
		}
	}
}

// TestDamagedWALIsReportedLoudly: 512 random bytes written into the WAL
// while otabox is stopped make SQLite drop the transactions after them
// (silently: 24 of 40 devices were lost without a word). The next start
// counts the commits missing and says so: an ERROR, a banner, healthy 0.
// (20 check-ins: fewer pages than SQLite's own checkpoint takes, so the
// bytes land in transactions only the WAL holds.)
func TestDamagedWALIsReportedLoudly(t *testing.T) {
	dir, _, v2, _ := fleetCatalog(t)
	data := t.TempDir()
	r := startData(t, data, "--catalog", dir)
	checkIns(t, r.addr, 0x400, 20, v2)
	kill9(r)
	wal := filepath.Join(data, "otabox.db-wal")
	fi, err := os.Stat(wal)
	if err != nil || fi.Size() < 32<<10 {
		t.Skipf("the WAL was already checkpointed (%v): nothing for this case to damage", err)
	}
	junk := make([]byte, 512)
	rand.Read(junk)
	f, _ := os.OpenFile(wal, os.O_WRONLY, 0)
	f.WriteAt(junk, fi.Size()/3)
	f.Close()
	r = startData(t, data, "--catalog", dir)
	lostLoudly(t, r, "committed transactions are not in the database")
	kill9(r)
	t.Logf("%d of 20 devices left in the record", len(recorded(t, data)))
}

// TestQuietSecondPutsTheRecordInTheDatabaseFile: after a second without
// writes the record is in otabox.db itself, not only in its WAL: ten
// times over one data dir, devices check in, a quiet second passes, otabox
// is killed -9, and a copy of otabox.db alone (no WAL) holds every device.
func TestQuietSecondPutsTheRecordInTheDatabaseFile(t *testing.T) {
	dir, _, v2, _ := fleetCatalog(t)
	data := t.TempDir()
	var macs []string
	for round := 0; round < 10; round++ {
		r := startData(t, data, "--catalog", dir)
		macs = append(macs, checkIns(t, r.addr, 0x500+round*10, 10, v2)...)
		time.Sleep(2200 * time.Millisecond) // a quiet second, and the writer's tick
		if fi, err := os.Stat(filepath.Join(data, "otabox.db-wal")); err != nil || fi.Size() != 0 {
			t.Fatalf("round %d: after a quiet second the WAL is not truncated: %v %v", round, fi, err)
		}
		kill9(r)
		alone := t.TempDir()
		b, err := os.ReadFile(filepath.Join(data, "otabox.db"))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(alone, "otabox.db"), b, 0o644)
		have := recorded(t, alone)
		for _, mac := range macs {
			if _, ok := have[mac]; !ok {
				t.Fatalf("round %d: %s is in the WAL only, not in otabox.db", round, mac)
			}
		}
	}
}

// TestCheckInRunningTheImageConfirmsAHeldDevice: a device that was sent
// an image twice and came back on its old one both times (failed, held
// back) and then checks in running the image is confirmed, whatever it
// was before: its hold ends (otabox devices, /metrics), and its history
// holds that check-in as one event.
func TestCheckInRunningTheImageConfirmsAHeldDevice(t *testing.T) {
	dir, v1, v2, _ := fleetCatalog(t)
	data := t.TempDir()
	r := startData(t, data, "--catalog", dir)
	d := emu.New(emu.ESP8266v31)
	d.STAMAC = "5C:CF:7F:00:25:01"
	// Sent v2, back on v1 (failed once, sent it again), back on v1 again:
	// failed twice, held back.
	for i, want := range []int{200, 200, 304} {
		d.Running = v1 // the new image never boots
		if res := d.Update(r.addr, "/update"); res.Status != want {
			t.Fatalf("request %d: %v %q", i+1, res, res.Headers["x-otabox-reason"])
		}
	}
	if got := recorded(t, data)[d.STAMAC]; got.State != "failed" {
		t.Fatalf("after two failures: %+v", got)
	}
	d.Running = v2
	if res := d.Update(r.addr, "/update"); res.Status != 304 {
		t.Fatalf("check-in running the image: %v %q", res, res.Headers["x-otabox-reason"])
	}
	if got := recorded(t, data)[d.STAMAC]; got.State != "confirmed" {
		t.Errorf("after the check-in running the image: %+v", got)
	}
	metrics := getBody(t, "http://"+r.addr+"/metrics")
	if !strings.Contains(metrics, "otabox_devices_held_back 0") || !strings.Contains(metrics, `otabox_devices_by_update_state{state="confirmed"} 1`) || strings.Contains(metrics, `state="failed"} 1`) {
		t.Errorf("metrics still count the device as held or failed:\n%s", grepLines(metrics, "otabox_devices"))
	}
}
