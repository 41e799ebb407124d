package appliance

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"otabox/appliance/emu"
	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
)

var update = flag.Bool("update", false, "rewrite testdata/responses.golden from this build's answers")

// TestResponsesAreByteIdentical: what devices send, as raw bytes, and
// every byte otabox answers (only the Date header's value stands for
// itself), compared with testdata/responses.golden: the listings,
// downloads, 304s and refusals of this build are those of the build that
// wrote the file. A change to the hot path (a cached header, a pooled
// buffer, another writer) that moves one byte fails here; a deliberate
// change rewrites the file with -update and shows in the diff.
func TestResponsesAreByteIdentical(t *testing.T) {
	dir := t.TempDir()
	files := map[string]imagegen.Spec{
		"app.bin":           {Family: espimage.ESP8266, Size: 48 << 10, Project: "app", Version: "1.4.0", Seed: 1},
		"esp32/sensor.bin":  {Family: espimage.ESP32, Size: 40 << 10, Project: "sensor", Version: "2.0.1", Date: "Nov 26 2026", Time: "19:53:16", Seed: 2},
		"esp32/sensor2.bin": {Family: espimage.ESP32, Size: 44 << 10, Project: "sensor", Version: "2.1.0", Date: "Dec  1 2026", Time: "08:00:00", Seed: 3},
	}
	images := map[string][]byte{}
	stamp := time.Date(2026, 12, 1, 12, 0, 0, 0, time.Local) // listings show a file's time in local time
	for name, spec := range files {
		b, err := imagegen.Build(spec)
		if err != nil {
			t.Fatal(err)
		}
		images[name] = b
		p := filepath.Join(dir, filepath.FromSlash(name))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, stamp, stamp)
	}
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not firmware\n"), 0o644)
	addr := serveRecorded(t, dir)
	const host = "otabox.local:8000" // what a device that found the box by mDNS puts in Host

	esp8266 := emu.New(emu.ESP8266v31)
	esp8266.STAMAC, esp8266.APMAC = "5C:CF:7F:00:00:01", "5E:CF:7F:00:00:01"
	running := emu.New(emu.ESP8266v31)
	running.STAMAC, running.APMAC, running.Running = "5C:CF:7F:00:00:02", "5E:CF:7F:00:00:02", images["app.bin"]
	esp32 := emu.New(emu.ESP32v30)
	esp32.STAMAC, esp32.APMAC, esp32.Running = "24:0A:C4:00:00:03", "24:0A:C4:00:00:04", images["esp32/sensor.bin"]
	idf := func(method, target, rng string) []byte {
		r := "Host: " + host + "\r\n"
		if rng != "" {
			r += "Range: " + rng + "\r\n"
		}
		return []byte(method + " " + target + " HTTP/1.1\r\nUser-Agent: ESP32 HTTP Client/1.0\r\n" + r + "Content-Length: 0\r\n\r\n")
	}
	cases := []struct {
		name string
		req  []byte
	}{
		{"AutoConnect's catalog listing of the root (ESP8266 core 3.1)", esp8266.CatalogRequest(host, "/")},
		{"AutoConnect's catalog listing of a folder (ESP32)", esp32.CatalogRequest(host, "/esp32")},
		{"ESP8266HTTPUpdate download with a STA MAC", esp8266.UpdateRequest(host, "/app.bin")},
		{"ESP8266HTTPUpdate check-in running the image: 304", running.UpdateRequest(host, "/app.bin")},
		{"HTTPUpdate (ESP32) asking /update: the newest of its project", esp32.UpdateRequest(host, "/update")},
		{"ESP-IDF esp_https_ota HEAD", idf("HEAD", "/esp32/sensor2.bin", "")},
		{"ESP-IDF size probe, Range bytes=0-0", idf("GET", "/esp32/sensor2.bin", "bytes=0-0")},
		{"ESP-IDF resume, Range bytes=40000-", idf("GET", "/esp32/sensor2.bin", "bytes=40000-")},
		{"a file that is not in the catalog: 404", esp8266.UpdateRequest(host, "/missing.bin")},
		{"a file that is not firmware: 403", esp8266.UpdateRequest(host, "/notes.txt")},
		{"a path out of the catalog: refused", []byte("GET /../../etc/passwd HTTP/1.1\r\nHost: " + host + "\r\n\r\n")},
	}
	var got bytes.Buffer
	for _, c := range cases {
		resp := exchangeRaw(t, addr, c.req)
		fmt.Fprintf(&got, "=== %s\n", c.name)
		for _, l := range strings.SplitAfter(string(c.req), "\r\n") {
			if l != "" {
				fmt.Fprintf(&got, "> %q\n", l)
			}
		}
		got.WriteString(describe(resp))
	}
	golden := filepath.Join("testdata", "responses.golden")
	if *update {
		os.MkdirAll("testdata", 0o755)
		if err := os.WriteFile(golden, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (go test ./appliance -run TestResponsesAreByteIdentical -update writes it)", err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		gl, wl := strings.Split(got.String(), "\n"), strings.Split(string(want), "\n")
		for i := 0; i < max(len(gl), len(wl)); i++ {
			g, w := "", ""
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("line %d of the answers differs from %s:\n got: %s\nwant: %s", i+1, golden, g, w)
			}
		}
	}
}

// exchangeRaw sends req on a connection of its own and returns every
// byte of the answer: the head, and the body its Content-Length (or the
// connection's end) delimits.
func exchangeRaw(t *testing.T, addr string, req []byte) []byte {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(req); err != nil {
		t.Fatal(err)
	}
	var raw bytes.Buffer
	br := bufio.NewReader(io.TeeReader(conn, &raw))
	method, _, _ := strings.Cut(string(req), " ")
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%q: %v", req, err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatalf("%q: body: %v", req, err)
	}
	return raw.Bytes()[:raw.Len()-br.Buffered()]
}

var dateHeader = regexp.MustCompile(`(?m)^Date: [^\r\n]*`)

// describe writes an answer as golden lines: the head verbatim (Date's
// value replaced), a text body verbatim, a binary one as its length and
// SHA-256.
func describe(resp []byte) string {
	head, body, _ := bytes.Cut(resp, []byte("\r\n\r\n"))
	head = dateHeader.ReplaceAll(head, []byte("Date: (the date)"))
	var b strings.Builder
	for _, l := range strings.SplitAfter(string(head)+"\r\n\r\n", "\r\n") {
		if l != "" {
			fmt.Fprintf(&b, "< %q\n", l)
		}
	}
	switch {
	case len(body) == 0:
	case bytes.IndexFunc(body, func(r rune) bool { return r < 0x20 && r != '\n' && r != '\t' && r != '\r' }) < 0:
		fmt.Fprintf(&b, "< body %q\n", body)
	default:
		fmt.Fprintf(&b, "< body: %d bytes, sha256 %x\n", len(body), sha256.Sum256(body))
	}
	return b.String()
}
