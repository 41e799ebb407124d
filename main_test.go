package main

import (
	"bufio"
	"crypto/md5"
	"encoding/hex"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"otabox/appliance/emu"
	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
)

// otabox is the binary under test, built once by TestMain.
var otabox string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "otabox-test")
	if err != nil {
		panic(err)
	}
	otabox = filepath.Join(dir, "otabox")
	build := exec.Command("go", "build", "-o", otabox, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// running is an otabox process serving on 127.0.0.1.
type running struct {
	cmd  *exec.Cmd
	addr string
	log  *logTail
}

// logTail collects the process's log lines.
type logTail struct {
	lines chan string
	all   strings.Builder
}

func start(t *testing.T, args ...string) *running {
	t.Helper()
	return startCmd(t, []string{otabox}, args...)
}

// startCmd starts argv (a binary, perhaps behind an emulator) as otabox
// serve on 127.0.0.1.
func startCmd(t *testing.T, argv []string, args ...string) *running {
	t.Helper()
	port := "0"
	quiet := strings.Contains(strings.Join(args, " "), "--log")
	if quiet { // no "serving" line to read the port from: choose one
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port = strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
		l.Close()
	}
	argv = append(append(argv[:len(argv):len(argv)], "serve", "--mdns=false", "--data-dir", t.TempDir(), "--bind", "127.0.0.1", "--port", port), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lt := &logTail{lines: make(chan string, 1000)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lt.lines <- sc.Text()
		}
		close(lt.lines)
	}()
	if quiet {
		addr := "127.0.0.1:" + port
		for i := 0; i < 200; i++ {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				return &running{cmd: cmd, addr: addr, log: lt}
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatal("otabox did not start listening")
	}
	re := regexp.MustCompile(`msg=serving addr=(\S+)`)
	deadline := time.After(20 * time.Second)
	for {
		select {
		case line, ok := <-lt.lines:
			if !ok {
				t.Fatalf("otabox exited before serving:\n%s", lt.all.String())
			}
			lt.all.WriteString(line + "\n")
			if m := re.FindStringSubmatch(line); m != nil {
				return &running{cmd: cmd, addr: m[1], log: lt}
			}
		case <-deadline:
			t.Fatalf("otabox did not start:\n%s", lt.all.String())
		}
	}
}

// TestServesEmbeddedFirmware is `make run` as a device sees it: every
// sample image listed and downloaded with a matching MD5, at the root and
// in the sub-folder, by an ESP8266 and an ESP32.
func TestServesEmbeddedFirmware(t *testing.T) {
	r := start(t)
	for i, tc := range []struct {
		core emu.Core
		chip espimage.Chip
		uri  string
		want string
	}{
		{emu.ESP8266v31, espimage.ChipESP8266, ".", "blink-esp8266.bin"},
		{emu.ESP8266v24, espimage.ChipESP8266, ".", "blink-esp8266.bin"},
		{emu.ESP8266v31, espimage.ChipESP8266, "lab", "sensor-esp8266-1m.bin"},
		{emu.ESP32v20, espimage.ChipESP32, ".", "blink-esp32.bin"},
		{emu.ESP32v30, espimage.ChipESP32S3, "lab", "sensor-esp32s3.bin"},
	} {
		i := i
		t.Run(tc.core.String()+"/"+tc.uri, func(t *testing.T) {
			d := emu.New(tc.core)
			d.STAMAC = "24:0A:C4:00:00:0" + string(rune('0'+i)) // otabox remembers each MAC's chip
			d.Chip = tc.chip
			d.ChipSize = 8 << 20
			list := d.Catalog(r.addr, tc.uri)
			if list.Err != "" || len(list.Firmwares) != 1 || list.Firmwares[0].Name != tc.want {
				t.Fatalf("catalog: %+v", list)
			}
			res := d.Update(r.addr, emu.FirmwareTarget(tc.uri, tc.want, false))
			if res.Outcome != emu.OK {
				t.Fatalf("update: %v", res)
			}
			file, _ := firmware.ReadFile("firmware/" + strings.TrimPrefix(tc.uri+"/", "./") + tc.want)
			sum := md5.Sum(file)
			if res.MD5 != hex.EncodeToString(sum[:]) || res.Headers["x-md5"] != res.MD5 {
				t.Errorf("md5 %s, x-MD5 %s, file %x", res.MD5, res.Headers["x-md5"], sum)
			}
			// The device now runs it: asking again is "no update".
			if again := d.Update(r.addr, emu.FirmwareTarget(tc.uri, tc.want, true)); again.Outcome != emu.NoUpdates {
				t.Errorf("second update: %v", again)
			}
		})
	}
}

func TestCommandLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		code int
		out  string
	}{
		{"version", []string{"--version"}, nil, 0, "otabox version"},
		{"bad log level", []string{"--log", "verbose"}, nil, 2, `unknown log level "verbose"`},
		{"bad log level from env", []string{"serve"}, []string{"OTABOX_LOG=loud"}, 2, `unknown log level "loud"`},
		{"list", []string{"list"}, nil, 0, "lab/sensor-esp32s3.bin"},
		{"inspect", []string{"inspect", "firmware/blink-esp32.bin"}, nil, 0, "project:        blink"},
		{"inspect bad file", []string{"inspect", "README.md"}, nil, 1, `README.md: not an ESP firmware image (starts with "# "; `},
		{"missing catalog", []string{"--catalog", "/nonexistent/dir"}, nil, 1, "catalog /nonexistent/dir"},
		{"version command", []string{"version"}, nil, 0, "otabox version"},
		{"typo is not serve", []string{"lsit"}, nil, 2, `otabox: unknown command "lsit"; did you mean "list"?`},
		{"unknown word is not serve", []string{"frobnicate"}, nil, 2, `otabox: unknown command "frobnicate"`},
		{"unknown flag", []string{"--bogus"}, nil, 2, "otabox: flag provided but not defined: -bogus (otabox --help lists the flags)"},
		{"unknown command flag", []string{"devices", "--bogus"}, nil, 2, "otabox devices: flag provided but not defined: -bogus"},
		{"flags after arguments", []string{"inspect", "firmware/blink-esp32.bin", "--json"}, nil, 0, `"file": "firmware/blink-esp32.bin"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(otabox, tc.args...)
			cmd.Env = append(os.Environ(), tc.env...)
			cmd.Dir = t.TempDir() // where a mistaken serve would create otabox-data
			for _, a := range tc.args {
				if _, err := os.Stat(a); err == nil && !strings.HasPrefix(a, "/") {
					cmd.Dir = "." // the arguments name files of the repo
				}
			}
			out, _ := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != tc.code || !strings.Contains(string(out), tc.out) {
				t.Fatalf("exit %d, want %d; output:\n%s", code, tc.code, out)
			}
			if tc.code == 2 && strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
				t.Errorf("a usage error in more than one line:\n%s", out)
			}
			if _, err := os.Stat(filepath.Join(cmd.Dir, "otabox-data")); err == nil && cmd.Dir != "." {
				t.Error("created ./otabox-data")
			}
		})
	}
}

// TestLogLevels: --log takes Python's names in any case; warning hides
// the per-request lines of successful requests but not refusals.
func TestLogLevels(t *testing.T) {
	r := start(t, "--log", "WARNING")
	emu.New(emu.ESP8266v31).Catalog(r.addr, ".")
	emu.New(emu.ESP8266v31).Update(r.addr, "/nope.bin")
	deadline := time.After(10 * time.Second)
	for {
		select {
		case line := <-r.log.lines:
			if strings.Contains(line, "status=200") {
				t.Fatalf("info line at warning level: %s", line)
			}
			if strings.Contains(line, "status=404") {
				for _, want := range []string{"level=WARN", "mac=5C:CF:7F:12:34:56", `reason="no file \"nope.bin\" in the catalog"`, "target=/nope.bin", "bytes=", "took="} {
					if !strings.Contains(line, want) {
						t.Errorf("log line lacks %s: %s", want, line)
					}
				}
				return
			}
		case <-deadline:
			t.Fatal("no log line for the refusal")
		}
	}
}

// TestGracefulShutdown: SIGTERM stops new connections but lets a running
// download finish, byte for byte.
func TestGracefulShutdown(t *testing.T) {
	dir := t.TempDir()
	big, err := imagegen.Build(imagegen.Spec{Family: espimage.ESP32, Size: 12 << 20, FlashSize: 16 << 20, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "big.bin"), big, 0o644)
	r := start(t, "--catalog", dir, "--grace", "30s")

	conn, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	d := emu.New(emu.ESP32v20)
	d.FreeSpace = 16 << 20
	conn.Write(d.UpdateRequest(r.addr, "/big.bin"))
	br := bufio.NewReader(conn)
	head := make([]byte, 64<<10)
	if _, err := io.ReadFull(br, head); err != nil {
		t.Fatal(err)
	}
	// 12 MB is more than the socket buffers hold: the handler is still
	// writing when the signal arrives.
	r.cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(300 * time.Millisecond)
	if c, err := net.DialTimeout("tcp", r.addr, time.Second); err == nil {
		c.Close()
		t.Error("still accepting connections after SIGTERM")
	}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	all := append(head, rest...)
	i := strings.Index(string(all), "\r\n\r\n")
	if body := all[i+4:]; len(body) != len(big) || md5.Sum(body) != md5.Sum(big) {
		t.Fatalf("got %d of %d bytes after shutdown began", len(body), len(big))
	}
	if err := r.cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	var order []string
	for line := range r.log.lines {
		if strings.Contains(line, "shutting down") || strings.Contains(line, "target=/big.bin") {
			order = append(order, line)
		}
	}
	if len(order) != 2 || !strings.Contains(order[0], "shutting down") || !strings.Contains(order[1], "status=200") {
		t.Fatalf("the download did not run across the shutdown:\n%s", strings.Join(order, "\n"))
	}
}

// TestBrowserRequestsAreNotFirmwareRefusals: a browser's favicon request
// is answered with an icon, and stray non-device requests are counted as
// "other", never as refused firmware requests.
func TestBrowserRequestsAreNotFirmwareRefusals(t *testing.T) {
	r := start(t)
	resp, err := http.Get("http://" + r.addr + "/favicon.ico")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/svg+xml" {
		t.Errorf("favicon: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, p := range []string{"/robots.txt", "/blink-esp8266.bin", "/wp-login.php"} {
		if resp, err := http.Get("http://" + r.addr + p); err == nil {
			resp.Body.Close()
		}
	}
	metrics := getBody(t, "http://"+r.addr+"/metrics")
	if strings.Contains(metrics, `endpoint="firmware"`) {
		t.Errorf("browser requests counted as firmware requests:\n%s", grepLines(metrics, "otabox_requests_total"))
	}
	if !strings.Contains(metrics, `otabox_requests_total{decision="refuse",endpoint="other",status="403"} 1`) {
		t.Errorf("not counted as other:\n%s", grepLines(metrics, "otabox_requests_total"))
	}
	if strings.Contains(r.log.all.String()+readFor(r.log, 300*time.Millisecond), "favicon.ico status=404") {
		t.Error("the favicon was refused")
	}
}

func grepLines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// readFor returns the log lines that arrive within d.
func readFor(lt *logTail, d time.Duration) string {
	var b strings.Builder
	deadline := time.After(d)
	for {
		select {
		case l, ok := <-lt.lines:
			if !ok {
				return b.String()
			}
			b.WriteString(l + "\n")
		case <-deadline:
			return b.String()
		}
	}
}

// TestMemoryLimitByDefault: otabox runs under a 40 MiB soft memory limit
// unless told otherwise; GOMEMLIMIT replaces the default, --memory-limit
// (or OTABOX_MEMORY_LIMIT) replaces both, and 0 means none. Read back
// from the runtime through /metrics.
func TestMemoryLimitByDefault(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  string
		args []string
		want float64
	}{
		{"default", "", nil, 40 << 20},
		{"GOMEMLIMIT", "GOMEMLIMIT=64MiB", nil, 64 << 20},
		{"flag over GOMEMLIMIT", "GOMEMLIMIT=64MiB", []string{"--memory-limit", "100"}, 100 << 20},
		{"from its variable", "OTABOX_MEMORY_LIMIT=48", nil, 48 << 20},
		{"none", "", []string{"--memory-limit", "0"}, math.MaxInt64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GOMEMLIMIT", "")
			os.Unsetenv("GOMEMLIMIT")
			if k, v, ok := strings.Cut(tc.env, "="); ok {
				t.Setenv(k, v)
			}
			r := start(t, tc.args...)
			got := metricValue(getBody(t, "http://"+r.addr+"/metrics"), "go_gc_gomemlimit_bytes")
			if got != tc.want {
				t.Errorf("memory limit %.0f, want %.0f", got, tc.want)
			}
		})
	}
}

// TestSamplesStayOnThisMachine: the embedded sample images do not boot,
// so `make run` serves them on 127.0.0.1 without mDNS unless ARGS says
// otherwise; the status page says they do not boot; served on a LAN
// address they get a WARN naming them; a --catalog folder gets neither.
func TestSamplesStayOnThisMachine(t *testing.T) {
	out, err := exec.Command("make", "-n", "run").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "./otabox serve -b 127.0.0.1 --mdns=false") {
		t.Errorf("make run does not keep the samples on this machine: %v\n%s", err, out)
	}
	if out, _ := exec.Command("make", "-n", "run", "ARGS=-b 0.0.0.0").CombinedOutput(); !strings.Contains(string(out), "./otabox serve -b 0.0.0.0") {
		t.Errorf("ARGS does not replace the default:\n%s", out)
	}
	local := start(t)
	if page := getBody(t, "http://"+local.addr+"/"); !strings.Contains(page, `id="samples"`) || !strings.Contains(page, "they do not boot") {
		t.Error("the status page does not say the samples do not boot")
	}
	lan := start(t, "--bind", "0.0.0.0")
	waitLog(t, lan, "serving otabox's sample images, which do not boot, on a LAN address")
	if line := waitLog(t, lan, "sample images"); !strings.Contains(line, "blink-esp8266.bin") {
		t.Errorf("the WARN does not name the images: %s", line)
	}
	dir, _, _, _ := fleetCatalog(t)
	own := start(t, "--catalog", dir)
	if page := getBody(t, "http://"+own.addr+"/"); strings.Contains(page, `id="samples"`) {
		t.Error("a --catalog folder is said to be the samples")
	}
}
