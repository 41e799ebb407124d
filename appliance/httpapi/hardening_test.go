package httpapi_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"otabox/appliance/catalog"
	"otabox/appliance/emu"
	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
	"otabox/appliance/httpapi"
)

// TestTraversal: every spelling of "somewhere else", on both endpoints,
// is refused; none reaches a file outside the catalog (there is none to
// reach: the catalog is in memory, and the paths never get that far).
func TestTraversal(t *testing.T) {
	addr, _ := start(t, testFS())
	corpus := []string{
		"../../../../etc/hostname", "/../../etc/passwd", "..%2f..%2fetc%2fpasswd", "%2e%2e/%2e%2e/etc/passwd",
		"%2E%2E%2F%2E%2E%2Fetc", "..\\..\\etc\\passwd", "lab\\..\\..\\x", "fw8266.bin%00.txt", "fw8266.bin\x00",
		"lab/../../etc", "lab/%2e%2e/%2e%2e/etc", "%c0%ae%c0%ae/etc/passwd", "%c0%af", "%e0%80%ae%e0%80%ae/x",
		"....//....//etc", "/./../etc", "lab/./../..", "%252e%252e/etc", "/etc/passwd", "//etc//passwd",
	}
	for _, p := range corpus {
		for _, target := range []string{
			"/_catalog?op=list&path=" + p,
			p,
			"/" + strings.TrimPrefix(p, "/"),
		} {
			t.Run(target, func(t *testing.T) {
				req := emu.New(emu.ESP8266v31).UpdateRequest("h", target)
				conn, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				conn.Write(req)
				resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
				if err != nil {
					return // net/http refused the request line outright: fine
				}
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode == 200 && !strings.HasPrefix(target, "/_catalog") {
					t.Fatalf("served %d bytes for %q", len(body), target)
				}
				if resp.StatusCode == 200 && bytes.Contains(body, []byte("root:")) {
					t.Fatalf("leaked: %q", body)
				}
				if resp.StatusCode >= 300 && resp.StatusCode < 400 && resp.StatusCode != 304 {
					t.Fatalf("redirected %q", target)
				}
			})
		}
	}
}

// FuzzRequest: any request-target and query, through the real listener
// wrapper and handler. Never a panic, never a redirect, never a 200 for a
// file whose bytes are not exactly a catalog file's.
func FuzzRequest(f *testing.F) {
	for _, s := range []string{"/fw8266.bin", "bin/fw.bin", "./lab/fw32s3.bin", "/_catalog?op=list&path=lab", "/_catalog?op=list&path=%2e%2e", "/update", "%zz", "?"} {
		f.Add(s)
	}
	cat, err := catalog.Load(testFS(), catalog.Options{})
	if err != nil {
		f.Fatal(err)
	}
	h := httpapi.New(cat, httpapi.Options{UpdatePath: "/update"})
	dev := emu.New(emu.ESP8266v31)
	dev.FreeSpace = 4 << 20
	f.Fuzz(func(t *testing.T, target string) {
		raw := dev.UpdateRequest("h", target)
		l := httpapi.FixTargets(&pipeListener{r: bytes.NewReader(raw)})
		c, _ := l.Accept()
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return // net/http refuses it before any handler
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 300 && rec.Code < 400 && rec.Code != 304 {
			t.Fatalf("%q: redirect %d", target, rec.Code)
		}
		if rec.Code == 200 && !strings.HasPrefix(req.URL.Path, "/_catalog") {
			found := false
			for _, e := range cat.Files() {
				if b, _ := io.ReadAll(e.Content()); bytes.Equal(b, rec.Body.Bytes()) {
					found = true
				}
			}
			if !found {
				t.Fatalf("%q: 200 with bytes that are no catalog file", target)
			}
		}
		if rec.Code >= 400 && rec.Header().Get("x-otabox-reason") == "" {
			t.Fatalf("%q: %d without a reason", target, rec.Code)
		}
	})
}

type pipeListener struct {
	net.Conn
	r    io.Reader
	done bool
}

func (p *pipeListener) Read(b []byte) (int, error) { return p.r.Read(b) }
func (p *pipeListener) Accept() (net.Conn, error) {
	if p.done {
		return nil, io.EOF
	}
	p.done = true
	return p, nil
}
func (p *pipeListener) Close() error   { return nil }
func (p *pipeListener) Addr() net.Addr { return &net.TCPAddr{} }

// TestSlowloris: 200 connections, each from its own loopback address,
// dribbling a request head a byte at a time, do not stop a device from
// listing and updating meanwhile.
func TestSlowloris(t *testing.T) {
	addr, _ := start(t, testFS())
	stop := make(chan struct{})
	var wg sync.WaitGroup
	opened := 0
	for i := 0; i < 200; i++ {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 2, byte(i/250), byte(i%250+1))}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			continue
		}
		opened++
		wg.Add(1)
		go func(c net.Conn) {
			defer wg.Done()
			defer c.Close()
			head := "GET /fw8266.bin HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 1000)
			for i := 0; i < len(head); i++ {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				if _, err := c.Write([]byte{head[i]}); err != nil {
					return
				}
			}
		}(c)
	}
	if opened < 190 {
		t.Fatalf("opened only %d slow connections", opened)
	}
	time.Sleep(300 * time.Millisecond) // all 200 are mid-header now
	start := time.Now()
	d := emu.New(emu.ESP8266v31)
	if list := d.Catalog(addr, "."); len(list.Firmwares) != 1 {
		t.Fatalf("catalog under slowloris: %+v", list)
	}
	if res := d.Update(addr, "/fw8266.bin"); res.Outcome != emu.OK {
		t.Fatalf("update under slowloris: %v", res)
	}
	t.Logf("device listed and updated in %v with %d slow connections open", time.Since(start), opened)
	close(stop)
	wg.Wait()
}

// TestPerAddressCap: one address cannot hold more than MaxConnsPerIP
// connections; another address is served all the same.
func TestPerAddressCap(t *testing.T) {
	cat, _ := catalog.Load(testFS(), catalog.Options{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httpapi.Server(httpapi.New(cat, httpapi.Options{}), nil)
	go srv.Serve(httpapi.FixTargets(httpapi.LimitPerIP(l, httpapi.MaxConnsPerIP, nil)))
	defer srv.Close()
	addr := l.Addr().String()
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	hog := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 3, 0, 1)}}
	for i := 0; i < httpapi.MaxConnsPerIP+5; i++ {
		c, err := hog.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	refused := 0
	for _, c := range held {
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err == io.EOF {
			refused++
		}
	}
	if refused != 5 {
		t.Errorf("%d of %d connections closed, want 5", refused, len(held))
	}
	if res := emu.New(emu.ESP8266v31).Catalog(addr, "."); res.Err != "" {
		t.Errorf("another address: %s", res.Err)
	}
}

// TestGzipServing: with --gzip, an ESP8266 core 2.7+ (known from its
// catalog request) gets the compressed image as the file itself; a 2.4
// core, a device that never listed the catalog and every ESP32 get the
// raw image.
func TestGzipServing(t *testing.T) {
	cat, err := catalog.Load(testFS(), catalog.Options{Gzip: func(string) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	e, _ := cat.File("fw8266.bin")
	if e.Gzip == nil || e.Gzip.Size >= e.Size {
		t.Fatalf("no gzip variant: %+v", e.Gzip)
	}
	if e32, _ := cat.File("fw32.bin"); e32.Gzip != nil {
		t.Fatal("ESP32 image compressed")
	}
	t.Logf("gzip saves %d of %d bytes (%.1f%%)", e.Size-e.Gzip.Size, e.Size, 100*float64(e.Size-e.Gzip.Size)/float64(e.Size))
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := httpapi.Server(httpapi.New(cat, httpapi.Options{}), nil)
	go srv.Serve(httpapi.FixTargets(l))
	defer srv.Close()
	addr := l.Addr().String()

	for _, tc := range []struct {
		core    emu.Core
		catalog bool
		ip      byte
		gzip    bool
	}{
		{emu.ESP8266v31, true, 1, true},
		{emu.ESP8266v27, true, 2, true},
		{emu.ESP8266v24, true, 3, false},
		{emu.ESP8266v31, false, 4, false},
		{emu.ESP32v30, true, 5, false},
	} {
		t.Run(fmt.Sprintf("%s/catalog=%v", tc.core, tc.catalog), func(t *testing.T) {
			// Each device from its own address: the catalog request's
			// knowledge is per address.
			d := emu.New(tc.core)
			d.Source = net.IPv4(127, 4, 0, tc.ip)
			d.Chip = espimage.ChipESP32
			name := "/fw8266.bin"
			if tc.core.Family == espimage.ESP32 {
				name = "/fw32.bin"
			}
			if tc.catalog {
				if res := d.Catalog(addr, "."); res.Err != "" {
					t.Fatal(res.Err)
				}
			}
			res := d.Update(addr, name)
			if res.Outcome != emu.OK {
				t.Fatalf("%v", res)
			}
			compressed := res.Image[0] == 0x1F
			if compressed != tc.gzip {
				t.Fatalf("compressed=%v, want %v", compressed, tc.gzip)
			}
			if tc.gzip && (res.MD5 != e.Gzip.MD5 || int64(len(res.Image)) != e.Gzip.Size) {
				t.Errorf("md5 %s len %d, want the compressed file's", res.MD5, len(res.Image))
			}
			if tc.gzip { // running the inflated image: no update, on the raw digests
				if again := d.Update(addr, name); again.Outcome != emu.NoUpdates {
					t.Errorf("after the gzip update: %v", again)
				}
			}
		})
	}
}

// TestStatusPathsAndDevices: people reach the status page's paths; an
// updater asking for "/" still gets a device answer, never HTML to flash.
func TestStatusPathsAndDevices(t *testing.T) {
	cat, _ := catalog.Load(testFS(), catalog.Options{})
	page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	h := httpapi.New(cat, httpapi.Options{Extra: page})
	for _, tc := range []struct {
		ua, path string
		want     int
	}{
		{"Mozilla/5.0", "/", http.StatusTeapot},
		{"Mozilla/5.0", "/api/devices", http.StatusTeapot},
		{"curl/8", "/metrics", http.StatusTeapot},
		{"ESP8266-http-Update", "/", http.StatusNotFound},
		{"ESP32-http-Update", "/api/x", http.StatusNotFound},
		{"Mozilla/5.0", "/fw8266.bin", http.StatusForbidden},
	} {
		req := httptest.NewRequest("GET", tc.path, nil)
		req.Header.Set("User-Agent", tc.ua)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%s %s: %d, want %d", tc.ua, tc.path, rec.Code, tc.want)
		}
	}
}

// rawStatus sends raw request bytes and returns the status and the reason.
func rawStatus(t *testing.T, addr string, req []byte) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	go conn.Write(req) // a refused head may not be read to its end
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no response to %d bytes: %v", len(req), err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Otabox-Reason")
}

// TestHeadOf16KB: a request head up to 16 KB is read; one byte more is
// refused with 431 and the reason.
func TestHeadOf16KB(t *testing.T) {
	addr, _ := start(t, testFS())
	head := func(size int) []byte {
		base := string(emu.New(emu.ESP8266v31).UpdateRequest("h", "/fw8266.bin"))
		base = strings.TrimSuffix(base, "\r\n")
		pad := size - len(base) - len("X-Pad: \r\n") - 2
		return []byte(base + "X-Pad: " + strings.Repeat("p", pad) + "\r\n\r\n")
	}
	for _, tc := range []struct {
		size   int
		status int
	}{{httpapi.MaxHeadBytes, 200}, {httpapi.MaxHeadBytes + 1, 431}, {20479, 431}, {64 << 10, 431}} {
		req := head(tc.size)
		if len(req) != tc.size {
			t.Fatalf("built %d bytes, want %d", len(req), tc.size)
		}
		status, reason := rawStatus(t, addr, req)
		if status != tc.status || (status == 431 && reason != "request head of more than 16384 bytes; devices send under 1 KB") {
			t.Errorf("head of %d bytes: %d %q", tc.size, status, reason)
		}
	}
}

// Test48HeaderLinesDuplicatesCounted: 48 header lines are read; a 49th,
// even a duplicate name, is refused with 431.
func Test48HeaderLinesDuplicatesCounted(t *testing.T) {
	addr, _ := start(t, testFS())
	lines := func(n int, name func(i int) string) []byte {
		var b strings.Builder
		b.WriteString("GET /fw8266.bin HTTP/1.0\r\nUser-Agent: ESP8266-http-Update\r\n")
		for i := 1; i < n; i++ {
			fmt.Fprintf(&b, "%s: %d\r\n", name(i), i)
		}
		b.WriteString("\r\n")
		return []byte(b.String())
	}
	same := func(int) string { return "X-Dup" }
	distinct := func(i int) string { return fmt.Sprintf("X-H%d", i) }
	for _, tc := range []struct {
		n      int
		name   func(int) string
		status int
	}{{48, same, 200}, {49, same, 431}, {1000, same, 431}, {48, distinct, 200}, {49, distinct, 431}} {
		status, reason := rawStatus(t, addr, lines(tc.n, tc.name))
		if status != tc.status || (status == 431 && reason != "request head of more than 48 header lines; devices send under 1 KB") {
			t.Errorf("%d lines: %d %q", tc.n, status, reason)
		}
	}
}

// TestEncodedSeparatorsRefused: %2f and %5c inside a path element are
// refused with 400, though a decoded "/" would name a real file.
func TestEncodedSeparatorsRefused(t *testing.T) {
	addr, _ := start(t, testFS())
	for _, target := range []string{"/lab%2ffw8266-1m.bin", "/lab%2Ffw8266-1m.bin", "/lab%5cfw8266-1m.bin", "lab%2ffw8266-1m.bin"} {
		status, reason := rawStatus(t, addr, emu.New(emu.ESP8266v31).UpdateRequest("h", target))
		if status != 400 || !strings.Contains(reason, "encoded / or \\") {
			t.Errorf("%s: %d %q", target, status, reason)
		}
	}
	if status, _ := rawStatus(t, addr, emu.New(emu.ESP8266v31).UpdateRequest("h", "/lab/fw8266-1m.bin")); status != 200 {
		t.Errorf("the plain path: %d", status)
	}
}

// TestReservedFolderNamesLeftOut: folders named like the status page's
// paths are left out with a warning; they could never be reached.
func TestReservedFolderNamesLeftOut(t *testing.T) {
	fsys := testFS()
	for _, n := range []string{"api/fw.bin", "metrics/fw.bin", "healthz/fw.bin", "station/fw.bin", "favicon.ico"} {
		fsys[n] = file(img8266)
	}
	cat, err := catalog.Load(fsys, catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"api", "metrics", "healthz", "station", "favicon.ico"} {
		if why, ok := cat.Skipped()[n]; !ok || !strings.Contains(why, "reserved") {
			t.Errorf("%s: skipped=%v %q", n, ok, why)
		}
	}
}

// TestEndpointNamedFilesLeftOut: a top-level file named update or
// _catalog could never be downloaded (the endpoint answers instead), so
// it is left out with the reason and never listed as an image; a folder
// of either name stays reachable. A top-level esphome or esp32fota file
// or folder is left out whole: the manifests answer there.
func TestEndpointNamedFilesLeftOut(t *testing.T) {
	fsys := testFS()
	fsys["update"] = file(img8266)
	fsys["_catalog"] = file(img8266)
	cat, err := catalog.Load(fsys, catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"update", "_catalog"} {
		if why := cat.Skipped()[n]; !strings.Contains(why, "device endpoint (/"+n+")") {
			t.Errorf("%s: skipped %q", n, why)
		}
	}
	addr, _ := start(t, fsys)
	resp := get(t, addr, string(emu.New(emu.ESP8266v31).CatalogRequest("h", ".")))
	if body := readBody(t, resp); strings.Contains(body, `"update"`) || strings.Contains(body, `"_catalog"`) {
		t.Errorf("listed: %s", body)
	}
	// The manifests' prefixes are taken whole: a file or a folder of
	// either name is left out too.
	manifests := testFS()
	manifests["esphome"] = file(img8266)
	manifests["esp32fota/fw.bin"] = file(img8266)
	mcat, err := catalog.Load(manifests, catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for n, why := range map[string]string{"esphome": "reserved for ESPHome's manifests", "esp32fota": "reserved for esp32FOTA's manifests"} {
		if got := mcat.Skipped()[n]; !strings.Contains(got, why) {
			t.Errorf("%s: skipped %q, want %q", n, got, why)
		}
	}
	if _, ok := mcat.File("esp32fota/fw.bin"); ok {
		t.Error("a file under the esp32fota folder is in the catalog")
	}
	folders := testFS()
	folders["update/fw.bin"] = file(img8266)
	folders["_catalog/fw.bin"] = file(img8266)
	fcat, err := catalog.Load(folders, catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"update/fw.bin", "_catalog/fw.bin"} {
		if _, ok := fcat.File(n); !ok {
			t.Errorf("%s left out: %q", n, fcat.Skipped()[n])
		}
	}
}

// TestTargetOf1024Bytes: a request-target up to 1024 bytes is read; a
// longer one gets 414 with the reason.
func TestTargetOf1024Bytes(t *testing.T) {
	addr, _ := start(t, testFS())
	for _, tc := range []struct {
		n      int
		status int
	}{{1024, 404}, {1025, 414}} {
		target := "/" + strings.Repeat("a", tc.n-1)
		status, reason := rawStatus(t, addr, emu.New(emu.ESP8266v31).UpdateRequest("h", target))
		if status != tc.status || (status == 414 && reason != "request-target of 1025 bytes; devices send under 1024") {
			t.Errorf("target of %d bytes: %d %q", tc.n, status, reason)
		}
	}
}

// TestHeadTimeAndIdleLimits: 10 s to send a head and 60 s of keep-alive
// idleness, as configured; with both shortened, a dribbling head and an
// idle keep-alive connection are closed by the server.
func TestHeadTimeAndIdleLimits(t *testing.T) {
	cat, _ := catalog.Load(testFS(), catalog.Options{})
	srv := httpapi.Server(httpapi.New(cat, httpapi.Options{}), nil)
	if srv.ReadHeaderTimeout != 10*time.Second || srv.IdleTimeout != 60*time.Second {
		t.Fatalf("head %v, idle %v", srv.ReadHeaderTimeout, srv.IdleTimeout)
	}
	srv.ReadHeaderTimeout, srv.IdleTimeout = 300*time.Millisecond, 300*time.Millisecond
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(httpapi.FixTargets(l))
	defer srv.Close()
	closedWithin := func(c net.Conn, d time.Duration) bool {
		c.SetReadDeadline(time.Now().Add(d))
		_, err := io.ReadAll(c)
		return err == nil // EOF: the server closed it
	}
	dribbler, _ := net.Dial("tcp", l.Addr().String())
	dribbler.Write([]byte("GET /fw8266.bin HTTP/1.1\r\nHost: x\r\n"))
	if !closedWithin(dribbler, 3*time.Second) {
		t.Error("a head not finished in time was not closed")
	}
	idle, _ := net.Dial("tcp", l.Addr().String())
	idle.Write(emu.New(emu.ESP8266v31).CatalogRequest("h", "."))
	br := bufio.NewReader(idle)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	idle.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("an idle keep-alive connection was not closed: %v", err)
	}
}

// TestDribbledHeadEndsWithinTheHeadTimeout: the head timeout runs from a
// head's first byte however the head is split between the quick listing
// path and net/http. A client silent for most of the first window, then
// dribbling "GET /_catalo" (the quick path's bytes) and then a file name
// (net/http's), is closed one head timeout after its first byte, not
// after the quick path's window plus net/http's.
func TestDribbledHeadEndsWithinTheHeadTimeout(t *testing.T) {
	const timeout = 3 * time.Second
	cat, _ := catalog.Load(testFS(), catalog.Options{})
	srv := httpapi.Server(httpapi.New(cat, httpapi.Options{}), nil)
	srv.ReadHeaderTimeout = timeout
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(httpapi.Quick(httpapi.FixTargets(l), srv))
	defer srv.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(timeout - 500*time.Millisecond) // silent, within the first window
	first := time.Now()
	ended := make(chan time.Time, 1)
	go func() {
		io.Copy(io.Discard, c)
		ended <- time.Now()
	}()
	chunks := []string{"GET /_cat", "alo", "g.bin HTTP/1.1\r\n", "Host: h\r\n"}
	for i := 0; ; i++ {
		piece := "X-Slow: 1\r\n"
		if i < len(chunks) {
			piece = chunks[i]
		}
		if _, err := c.Write([]byte(piece)); err != nil {
			break
		}
		select {
		case at := <-ended:
			if took := at.Sub(first); took > timeout+time.Second {
				t.Fatalf("head ended %v after its first byte; the head timeout is %v", took.Round(time.Millisecond), timeout)
			}
			return
		case <-time.After(600 * time.Millisecond):
		}
		if time.Since(first) > 3*timeout {
			t.Fatal("a dribbled head was never closed")
		}
	}
	at := <-ended
	if took := at.Sub(first); took > timeout+time.Second {
		t.Fatalf("head ended %v after its first byte; the head timeout is %v", took.Round(time.Millisecond), timeout)
	}
}

// pacedRead reads an image response from conn at rate bytes/s, in the
// small reads of a device's lwIP, and returns the body bytes it got
// before the image ended or the server cut it off.
func pacedRead(t *testing.T, conn net.Conn, rate int) (body []byte, length int64) {
	t.Helper()
	br := bufio.NewReaderSize(conn, 512)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("%v %v", resp, err)
		return nil, 0
	}
	const tick = 50 * time.Millisecond
	per := rate * int(tick) / int(time.Second)
	buf := make([]byte, per)
	next := time.Now()
	for int64(len(body)) < resp.ContentLength {
		n, err := io.ReadFull(resp.Body, buf[:min(per, int(resp.ContentLength)-len(body))])
		body = append(body, buf[:n]...)
		if err != nil {
			break
		}
		next = next.Add(tick)
		time.Sleep(time.Until(next))
	}
	return body, resp.ContentLength
}

// TestReaderAboveMinRateFinishes: over real sockets, a reader taking
// 3,000 B/s behind a 4 KB receive window and 1,460-byte segments (a weak
// ESP8266 link: lwIP's MSS) completes under a 2,048 B/s minimum, and one
// taking 1,500 B/s is cut off. The margin is for a loaded test machine: a
// reader that falls behind its pace really is slower, and behind a 4 KB
// window it cannot catch up. How the rate is measured near the minimum is
// TestPacerChargesOnlyTheDevicesTime's. (Plain loopback's 64 KB segments
// fill a 4 KB window at once and stall it for seconds: no device link does
// that.)
func TestReaderAboveMinRateFinishes(t *testing.T) {
	t.Parallel()
	img := mustBuild(imagegen.Spec{Family: espimage.ESP8266, Size: 64 << 10, Seed: 31})
	cat := diskCatalog(t, map[string][]byte{"fw.bin": img})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	outcome := map[string]*httpapi.Exchange{} // by client address
	srv := httpapi.Server(httpapi.New(cat, httpapi.Options{MinRate: 2048, RateWindow: 10 * time.Second,
		Observe: func(ev *httpapi.Exchange) {
			mu.Lock()
			outcome[ev.Client] = ev
			mu.Unlock()
		}}), nil)
	go srv.Serve(httpapi.FixTargets(l))
	defer srv.Close()
	from := map[int]string{3000: "127.0.0.21", 1500: "127.0.0.22"}
	var wg sync.WaitGroup
	for rate, ip := range from {
		dialer := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Control: func(_, _ string, c syscall.RawConn) error {
			return c.Control(func(fd uintptr) {
				syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
				syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, 1460)
			})
		}}
		conn, err := dialer.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn.Write(emu.New(emu.ESP8266v31).UpdateRequest(l.Addr().String(), "/fw.bin"))
			pacedRead(t, conn, rate)
		}()
	}
	wg.Wait()
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if ev := outcome[from[3000]]; ev == nil || !ev.Completed {
		t.Errorf("the 3,000 B/s reader did not complete: %+v", ev)
	}
	if ev := outcome[from[1500]]; ev == nil || ev.Completed || !strings.Contains(ev.Reason, "under the minimum of 2048 bytes/s") {
		t.Errorf("the 1,500 B/s reader was not cut off: %+v", ev)
	}
}
