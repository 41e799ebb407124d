package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"otabox/appliance/catalog"
	"otabox/appliance/decide"
	"otabox/appliance/device"
	"otabox/appliance/emu"
	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
	"otabox/appliance/httpapi"
	"otabox/appliance/store"
)

// images used across the tests, built once.
var (
	img8266   = mustBuild(imagegen.Spec{Family: espimage.ESP8266, Size: 96 << 10, Project: "blink", Version: "1.0.0", Seed: 1})
	img8266v2 = mustBuild(imagegen.Spec{Family: espimage.ESP8266, Size: 100 << 10, Project: "blink", Version: "1.1.0", Seed: 5})
	img8266_1 = mustBuild(imagegen.Spec{Family: espimage.ESP8266, Size: 64 << 10, FlashSize: 1 << 20, Project: "sensor", Version: "2.0.0", Seed: 3})
	img32     = mustBuild(imagegen.Spec{Family: espimage.ESP32, Size: 96 << 10, Project: "blink", Version: "1.0.0", Date: "Nov 20 2026", Time: "10:15:00", Seed: 2})
	img32v2   = mustBuild(imagegen.Spec{Family: espimage.ESP32, Size: 98 << 10, Project: "blink", Version: "1.1.0", Date: "Nov 25 2026", Time: "08:00:00", Seed: 6})
	img32s3   = mustBuild(imagegen.Spec{Family: espimage.ESP32, Chip: espimage.ChipESP32S3, Size: 80 << 10, Project: "sensor", Version: "2.1.0", Date: "Nov 24 2026", Time: "16:42:07", Seed: 4})
)

func mustBuild(s imagegen.Spec) []byte {
	b, err := imagegen.Build(s)
	if err != nil {
		panic(err)
	}
	return b
}

func file(b []byte) *fstest.MapFile {
	return &fstest.MapFile{Data: b, ModTime: time.Date(2026, 11, 26, 19, 53, 16, 0, time.Local)}
}

// testFS is a catalog with both families at the root and in a sub-folder.
func testFS() fstest.MapFS {
	return fstest.MapFS{
		"fw8266.bin":          file(img8266),
		"fw32.bin":            file(img32),
		"notes.txt":           file([]byte("release notes\n")),
		"lab/fw8266-1m.bin":   file(img8266_1),
		"lab/fw32s3.bin":      file(img32s3),
		"lab/deeper/fw32.bin": file(img32),
		"empty":               &fstest.MapFile{Mode: fs.ModeDir | 0o755},
		"gz/fw8266.bin.gz":    file(imagegen.Gzip(img8266)),
	}
}

// start serves fsys on 127.0.0.1 on an ephemeral port, as otabox does.
func start(t *testing.T, fsys fs.FS) (string, *catalog.Catalog) {
	t.Helper()
	cat, err := catalog.Load(fsys, catalog.Options{Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := httpapi.New(cat, httpapi.Options{UpdatePath: "/update"})
	srv := httpapi.Server(h, nil)
	go srv.Serve(httpapi.Quick(httpapi.FixTargets(l), srv))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return l.Addr().String(), cat
}

// diskCatalog is a catalog of real files (pinned, read chunk by chunk).
func diskCatalog(t *testing.T, files map[string][]byte) *catalog.Catalog {
	t.Helper()
	dir := writeDir(t, files)
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	cat, err := catalog.Load(root.FS(), catalog.Options{Source: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close(nil) })
	return cat
}

// writeDir writes files into a new folder and returns it.
func writeDir(t *testing.T, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// keptCatalog is a catalog of dir's files whose bytes the fleet record
// keeps a copy of (sent by reference, see catalog.DigestCache), and the
// record.
func keptCatalog(t *testing.T, dir string) (*catalog.Catalog, *store.Store) {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	cat, err := catalog.Load(root.FS(), catalog.Options{Source: dir, Cache: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close(nil) })
	cat.WaitCopies() // written after the load, in the background
	for _, e := range cat.Files() {
		if _, ok := st.Copy(e.SHA256, e.Size); !ok {
			t.Fatalf("%s: no copy kept", e.Path)
		}
	}
	return cat, st
}

func names(fws []emu.Firmware) string {
	var n []string
	for _, f := range fws {
		n = append(n, f.Name)
	}
	return strings.Join(n, " ")
}

func TestCatalogAsEveryDeviceSeesIt(t *testing.T) {
	addr, _ := start(t, testFS())
	for _, core := range emu.AllCores {
		want := map[espimage.Family]map[string]string{
			espimage.ESP8266: {".": "fw8266.bin", "lab": "fw8266-1m.bin"},
			espimage.ESP32:   {".": "fw32.bin", "lab": "fw32s3.bin"},
		}[core.Family]
		for _, uri := range []string{".", "", "lab", "/lab", "lab/", "./lab", "lab/deeper"} {
			t.Run(fmt.Sprintf("%s/uri=%q", core, uri), func(t *testing.T) {
				res := emu.New(core).Catalog(addr, uri)
				if res.Err != "" {
					t.Fatalf("device shows %q", res.Err)
				}
				key := strings.Trim(strings.TrimPrefix(uri, "./"), "/")
				if key == "" {
					key = "."
				}
				exp, ok := want[key]
				if key == "lab/deeper" {
					exp, ok = map[espimage.Family]string{espimage.ESP32: "fw32.bin"}[core.Family], true
				}
				if !ok {
					t.Fatalf("no expectation for %q", key)
				}
				if got := names(res.Firmwares); got != exp {
					t.Errorf("offered %q, want %q", got, exp)
				}
				for i, c := range res.Costs {
					if c > emu.JSONBuffer {
						t.Errorf("entry %d costs %d bytes", i, c)
					}
				}
			})
		}
	}
}

func TestCatalogEntryShape(t *testing.T) {
	addr, _ := start(t, testFS())
	res := emu.New(emu.ESP32v20).Catalog(addr, ".")
	if len(res.Firmwares) != 1 {
		t.Fatalf("firmwares %+v", res.Firmwares)
	}
	// The ESP32 image carries its build stamp; that is what the device shows.
	if f := res.Firmwares[0]; f.Date != "11/20/26" || f.Time != "10:15" || f.Size != len(img32) {
		t.Errorf("entry %+v", f)
	}
	resp := get(t, addr, "GET /_catalog?op=list&path=. HTTP/1.1\r\nHost: x\r\nUser-Agent: ESP32HTTPClient\r\n\r\n")
	if resp.Header.Get("Content-Type") != "application/json" || resp.ContentLength <= 0 || len(resp.TransferEncoding) > 0 {
		t.Errorf("headers %v, length %d", resp.Header, resp.ContentLength)
	}
}

func TestEmptyFolderIsNotAnError(t *testing.T) {
	addr, _ := start(t, testFS())
	res := emu.New(emu.ESP8266v31).Catalog(addr, "empty")
	if res.Err != "" || res.Caption != "No available firmwares" {
		t.Fatalf("device shows %q", res.Caption)
	}
	body := readBody(t, get(t, addr, "GET /_catalog?op=list&path=empty HTTP/1.0\r\n\r\n"))
	if body == "[]" {
		t.Fatal("an empty folder answered []")
	}
}

func TestNameBudget(t *testing.T) {
	at128 := strings.Repeat("a", 124) + ".bin" // 128 bytes: the entry costs exactly 256
	at129 := strings.Repeat("b", 125) + ".bin"
	addr, cat := start(t, fstest.MapFS{at128: file(img8266), at129: file(img8266), "ok.bin": file(img8266)})
	if _, ok := cat.File(at129); ok {
		t.Error("129-byte name is in the catalog")
	}
	res := emu.New(emu.ESP8266v31).Catalog(addr, ".")
	if res.Err != "" {
		t.Fatalf("device shows %q", res.Err)
	}
	if got := names(res.Firmwares); got != at128+" ok.bin" {
		t.Errorf("offered %q", got)
	}
	if res.Costs[0] != 256 {
		t.Errorf("128-byte name costs %d, want 256", res.Costs[0])
	}
}

func TestUnsafeNamesLeftOut(t *testing.T) {
	_, cat := start(t, fstest.MapFS{"my fw.bin": file(img8266), "fé.bin": file(img8266), "a&b.bin": file(img8266), "bad.bin": file(img8266[:100])})
	if n := len(cat.Files()); n != 0 {
		t.Errorf("%d files in the catalog, want 0", n)
	}
}

func TestDownloadEveryCore(t *testing.T) {
	addr, cat := start(t, testFS())
	for _, core := range emu.AllCores {
		for _, tc := range []struct {
			uri, name string
			legacy    bool
		}{
			{".", "", false}, {".", "", true}, {"lab", "", false}, {"/lab", "", false}, {"lab/", "", false},
		} {
			t.Run(fmt.Sprintf("%s/uri=%q/legacy=%v", core, tc.uri, tc.legacy), func(t *testing.T) {
				dev := emu.New(core)
				if core.Family == espimage.ESP32 && strings.Contains(tc.uri, "lab") {
					// Another board: a MAC is one chip's (a completed
					// download teaches otabox its chip).
					dev.Chip, dev.STAMAC = espimage.ChipESP32S3, "34:85:18:12:34:56"
				}
				list := dev.Catalog(addr, tc.uri)
				if len(list.Firmwares) != 1 {
					t.Fatalf("catalog %+v", list)
				}
				name := list.Firmwares[0].Name
				dev.ChipSize = 4 << 20
				res := dev.Update(addr, emu.FirmwareTarget(tc.uri, name, tc.legacy))
				if res.Outcome != emu.OK {
					t.Fatalf("update: %v", res)
				}
				p, _ := catalog.Clean(tc.uri + "/" + name)
				e, _ := cat.File(p)
				if res.MD5 != e.MD5 || res.Headers["x-md5"] != e.MD5 {
					t.Errorf("md5 %s, x-MD5 %s, catalog %s", res.MD5, res.Headers["x-md5"], e.MD5)
				}
			})
		}
	}
}

// TestRequestTargets sends the request lines devices really send, byte for
// byte, and checks none is refused or redirected.
func TestRequestTargets(t *testing.T) {
	addr, _ := start(t, testFS())
	for _, target := range []string{"/fw8266.bin", "./fw8266.bin", "fw8266.bin", "/./fw8266.bin", "//fw8266.bin", "lab/fw8266-1m.bin", "lab//fw8266-1m.bin", "/lab/fw8266-1m.bin", "./lab/fw8266-1m.bin", "http://box:8000/fw8266.bin"} {
		t.Run(target, func(t *testing.T) {
			dev := emu.New(emu.ESP8266v31)
			resp := get(t, addr, string(dev.UpdateRequest("192.168.1.10:8000", target)))
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, resp.Header.Get("x-otabox-reason"))
			}
			if got := resp.Header.Values("x-MD5"); len(got) != 1 || len(got[0]) != 32 || strings.ToLower(got[0]) != got[0] {
				t.Errorf("x-MD5 %q", got)
			}
			if cd := resp.Header.Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment; filename=") {
				t.Errorf("Content-Disposition %q", cd)
			}
			if resp.Header.Get("Content-Type") != "application/octet-stream" {
				t.Errorf("Content-Type %q", resp.Header.Get("Content-Type"))
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	addr, _ := start(t, testFS())
	dev := func(core emu.Core, mod func(*emu.Device)) *emu.Device {
		d := emu.New(core)
		if mod != nil {
			mod(d)
		}
		return d
	}
	for _, tc := range []struct {
		name, request string
		status        int
		reason        string
	}{
		{"missing op", "GET /_catalog?path=. HTTP/1.0\r\n\r\n", 400, "without op"},
		{"unknown op", "GET /_catalog?op=delete&path=. HTTP/1.0\r\n\r\n", 400, "unknown catalog operation"},
		{"unknown folder", "GET /_catalog?op=list&path=nosuch HTTP/1.0\r\n\r\n", 404, "no folder"},
		{"folder is a file", "GET /_catalog?op=list&path=fw32.bin HTTP/1.0\r\n\r\n", 404, "is a file"},
		{"traversal in path", "GET /_catalog?op=list&path=../.. HTTP/1.0\r\n\r\n", 400, `".."`},
		{"browser download", "GET /fw8266.bin HTTP/1.0\r\nUser-Agent: curl/8\r\n\r\n", 403, "only the ESP8266/ESP32 HTTP updater"},
		{"no user agent", "GET /fw8266.bin HTTP/1.0\r\n\r\n", 403, "only the ESP8266/ESP32 HTTP updater"},
		{"unknown file", string(dev(emu.ESP8266v31, nil).UpdateRequest("h", "/nope.bin")), 404, "no file"},
		{"folder as file", string(dev(emu.ESP8266v31, nil).UpdateRequest("h", "/lab")), 404, "is a folder"},
		{"traversal", string(dev(emu.ESP8266v31, nil).UpdateRequest("h", "/../../etc/hostname")), 400, `".."`},
		{"encoded traversal", string(dev(emu.ESP8266v31, nil).UpdateRequest("h", "/%2e%2e/etc/hostname")), 400, `".."`},
		{"not firmware", string(dev(emu.ESP8266v31, nil).UpdateRequest("h", "/notes.txt")), 403, "not a firmware image"},
		{"ESP32 image to ESP8266", string(dev(emu.ESP8266v31, nil).UpdateRequest("h", "/fw32.bin")), 403, "the device is an ESP8266"},
		{"ESP8266 image to ESP32", string(dev(emu.ESP32v20, nil).UpdateRequest("h", "/fw8266.bin")), 403, "the device is an ESP32"},
		{"flash too small", string(dev(emu.ESP8266v31, func(d *emu.Device) { d.ChipSize = 1 << 20 }).UpdateRequest("h", "/fw8266.bin")), 403, "4 MB of flash, the device has 1 MB"},
		{"no free space", string(dev(emu.ESP8266v27, func(d *emu.Device) { d.FreeSpace = 50000 }).UpdateRequest("h", "/fw8266.bin")), 403, "free"},
		{"ESP32 wrong chip", string(dev(emu.ESP32v30, func(d *emu.Device) { d.Running = img32 }).UpdateRequest("h", "/lab/fw32s3.bin")), 403, "built for ESP32-S3, the device is an ESP32"},
		{"malformed header", "GET /fw8266.bin HTTP/1.0\r\nUser-Agent: ESP8266-http-Update\r\nx-ESP8266-free-space: lots\r\n\r\n", 400, "not a byte count"},
		{"gzip to a 2.4 core", string(dev(emu.ESP8266v24, nil).UpdateRequest("h", "/gz/fw8266.bin.gz")), 403, "older than 2.6"},
		{"method", "POST /fw8266.bin HTTP/1.0\r\nContent-Length: 0\r\n\r\n", 405, "method POST"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := get(t, addr, tc.request)
			reason := resp.Header.Get("x-otabox-reason")
			body := readBody(t, resp)
			if resp.StatusCode != tc.status || !strings.Contains(reason, tc.reason) {
				t.Fatalf("got %d %q, want %d with %q", resp.StatusCode, reason, tc.status, tc.reason)
			}
			if strings.TrimSpace(body) != reason || strings.Contains(reason, "\n") {
				t.Errorf("body %q is not the one-line reason %q", body, reason)
			}
		})
	}
}

// TestDecisionsAsTheDeviceSeesThem: a device reports the image it already
// runs as "no update", on every core, and an image of the other family as
// a failure before any byte is flashed.
func TestDecisionsAsTheDeviceSeesThem(t *testing.T) {
	addr, _ := start(t, testFS())
	for _, core := range emu.AllCores {
		t.Run(core.String(), func(t *testing.T) {
			own, other := "/fw8266.bin", "/fw32.bin"
			running := img8266
			if core.Family == espimage.ESP32 {
				own, other, running = other, own, img32
			}
			d := emu.New(core)
			d.Running = running
			if core.Family == espimage.ESP8266 {
				d.FlashMode = 0 // a QIO chip: the flashed header differs from the DIO file
			}
			// ESP32 1.0 cores send no sketch-md5: the SHA-256 alone must do.
			if res := d.Update(addr, own); res.Outcome != emu.NoUpdates || res.Status != 304 {
				t.Fatalf("device running %s: %v", own, res)
			}
			if res := d.Update(addr, other); res.Outcome != emu.Failed || res.Status != 403 {
				t.Fatalf("other family: %v", res)
			}
		})
	}
}

// TestGzipImages: a gzip ESP8266 image reaches a 2.7+ core and flashes,
// and is offered only to ESP8266 devices.
func TestGzipImages(t *testing.T) {
	addr, cat := start(t, testFS())
	e, ok := cat.File("gz/fw8266.bin.gz")
	if !ok || e.Type != catalog.Bin || !e.Image.Compressed {
		t.Fatalf("fw8266.bin.gz not a bin entry: %+v", e)
	}
	d := emu.New(emu.ESP8266v31)
	if res := d.Update(addr, "/gz/fw8266.bin.gz"); res.Outcome != emu.OK || res.MD5 != e.MD5 {
		t.Fatalf("%v", res)
	}
	// Now running the inflated image: the plain and the gzip file are both "no update".
	for _, name := range []string{"/fw8266.bin", "gz/fw8266.bin.gz"} {
		if res := d.Update(addr, name); res.Outcome != emu.NoUpdates {
			t.Errorf("%s: %v", name, res)
		}
	}
}

func TestUpdateURL(t *testing.T) {
	fsys := testFS()
	fsys["fw8266-v2.bin"] = file(img8266v2)
	fsys["fw32-v2.bin"] = file(img32v2)
	addr, _ := start(t, fsys)
	for _, core := range []emu.Core{emu.ESP8266v24, emu.ESP8266v31, emu.ESP32v10, emu.ESP32v20, emu.ESP32latest} {
		t.Run(core.String(), func(t *testing.T) {
			d := emu.New(core)
			d.Running, d.FlashMode = img8266, 3
			want := img8266v2
			if core.Family == espimage.ESP32 {
				d.Running, want = img32, img32v2
			}
			res := d.Update(addr, "/update")
			if res.Outcome != emu.OK || string(res.Image) != string(want) {
				t.Fatalf("first check: %v", res)
			}
			if res := d.Update(addr, "/update"); res.Outcome != emu.NoUpdates {
				t.Fatalf("after updating: %v (reason %q)", res, res.Headers["x-otabox-reason"])
			}
			d.Running = []byte("something the catalog does not know")
			if res := d.Update(addr, "/update"); res.Outcome != emu.NoUpdates || !strings.Contains(res.Headers["x-otabox-reason"], "not in the catalog") {
				t.Fatalf("unknown image: %v %q", res, res.Headers["x-otabox-reason"])
			}
		})
	}
}

// TestChipRemembered: an ESP32 seen twice running an ESP32 image keeps
// its chip even after it runs something the catalog does not know.
func TestChipRemembered(t *testing.T) {
	addr, _ := start(t, testFS())
	d := emu.New(emu.ESP32v30)
	d.Running = img32
	for range 2 {
		if res := d.Update(addr, "/fw32.bin"); res.Outcome != emu.NoUpdates {
			t.Fatal(res)
		}
	}
	d.Running = []byte("custom build")
	res := d.Update(addr, "/lab/fw32s3.bin")
	if res.Status != 403 || !strings.Contains(res.Headers["x-otabox-reason"], "the device is an ESP32") {
		t.Fatalf("%v %q", res, res.Headers["x-otabox-reason"])
	}
	other := emu.New(emu.ESP32v30) // another MAC, never seen: nothing known
	other.STAMAC = "24:0A:C4:AA:BB:CC"
	other.Chip = espimage.ChipESP32S3
	if res := other.Update(addr, "/lab/fw32s3.bin"); res.Outcome != emu.OK {
		t.Fatal(res)
	}
}

// TestSpoofedChipClaimLeavesTheDeviceServed: one request carrying a
// victim's MAC and an ESP32-S3 image's digest teaches nothing; neither do
// such claims repeated from another address once the victim's chip is
// known (by a completed download, or by its own claim twice): the victim,
// now running an image the catalog does not know, is still served its
// ESP32 image and refused the S3 one.
func TestSpoofedChipClaimLeavesTheDeviceServed(t *testing.T) {
	addr, _ := start(t, testFS())
	const victimMAC = "24:0A:C4:11:22:33"
	spoof := func(from byte, times int) {
		s := emu.New(emu.ESP32v30)
		s.STAMAC, s.Chip, s.Running = victimMAC, espimage.ChipESP32S3, img32s3
		s.Source = net.IPv4(127, 0, 0, from)
		for range times {
			s.Update(addr, "/lab/fw32s3.bin")
		}
	}
	victim := emu.New(emu.ESP32v30)
	victim.STAMAC = victimMAC
	victim.Running = []byte("a build of its own")
	victim.Source = net.IPv4(127, 0, 0, 2)

	spoof(3, 1) // before anything is known: one claim teaches nothing
	if res := victim.Update(addr, "/fw32.bin"); res.Outcome != emu.OK {
		t.Fatalf("after one spoofed claim: %v %q", res, res.Headers["x-otabox-reason"])
	}
	// That download completed: the victim is known as an ESP32 now. It
	// is flashed with a build of its own again.
	victim.Running = []byte("another build of its own")
	spoof(3, 5)
	spoof(4, 5)
	if res := victim.Update(addr, "/fw32.bin"); res.Outcome != emu.OK {
		t.Fatalf("after spoofed claims from other addresses: %v %q", res, res.Headers["x-otabox-reason"])
	}
	if res := victim.Update(addr, "/lab/fw32s3.bin"); res.Status != 403 || !strings.Contains(res.Headers["x-otabox-reason"], "the device is an ESP32") {
		t.Fatalf("the S3 image to the ESP32: %v %q", res, res.Headers["x-otabox-reason"])
	}
}

func TestKeepAliveCatalogRequests(t *testing.T) {
	addr, _ := start(t, testFS())
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	d := emu.New(emu.ESP8266v31)
	r := bufio.NewReader(conn)
	for i := 0; i < 3; i++ {
		conn.Write(d.CatalogRequest("h", "lab"))
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		if body := readBody(t, resp); resp.StatusCode != 200 || !strings.Contains(body, "fw8266-1m.bin") {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
	}
}

func get(t *testing.T, addr, request string) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestNotYetHashedIs503: a file that is in the folder but not yet read and
// hashed is answered 503 with Retry-After and the reason, never listed and
// never served with a digest nobody computed.
func TestNotYetHashedIs503(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "big.bin"), mustBuild(imagegen.Spec{Family: espimage.ESP8266, Size: 64 << 10}), 0o644)
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	cat, err := catalog.Load(root.FS(), catalog.Options{Source: dir, Budget: -1})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httpapi.Server(httpapi.New(cat, httpapi.Options{}), nil)
	go srv.Serve(httpapi.FixTargets(l))
	defer srv.Close()
	d := emu.New(emu.ESP8266v31)
	res := d.Update(l.Addr().String(), "/big.bin")
	if res.Status != 503 || res.Headers["retry-after"] != "5" || !strings.Contains(res.Headers["x-otabox-reason"], "big.bin is still being read and hashed (1 files, 0 MB to go)") {
		t.Errorf("not-yet-hashed file: %v retry-after %q reason %q", res, res.Headers["retry-after"], res.Headers["x-otabox-reason"])
	}
	if list := d.Catalog(l.Addr().String(), "."); len(list.Firmwares) != 0 {
		t.Errorf("listed before it was hashed: %+v", list.Firmwares)
	}
}

// TestSlowDeviceFinishesLongAfterTheWindow: a disk image read slowly by a
// device whose last bytes wait in the socket longer than the rate window
// (the drain before the last chunk) still completes: the write deadline
// is renewed after the wait.
func TestSlowDeviceFinishesLongAfterTheWindow(t *testing.T) {
	img := mustBuild(imagegen.Spec{Family: espimage.ESP8266, Size: 192 << 10, Seed: 9})
	cat := diskCatalog(t, map[string][]byte{"fw.bin": img})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httpapi.Server(httpapi.New(cat, httpapi.Options{MinRate: 1024, RateWindow: time.Second}), nil)
	go srv.Serve(httpapi.FixTargets(l))
	defer srv.Close()
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4096)
	conn.Write(emu.New(emu.ESP8266v31).UpdateRequest(l.Addr().String(), "/fw.bin"))
	br := bufio.NewReaderSize(conn, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	// 64 KB/s: the whole image takes 3 s, three rate windows.
	var got []byte
	buf := make([]byte, 6400)
	for int64(len(got)) < resp.ContentLength {
		n, err := resp.Body.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			break
		}
		time.Sleep(100 * time.Millisecond * time.Duration(n) / 6400)
	}
	if !bytes.Equal(got, img) {
		t.Errorf("read %d of %d bytes", len(got), len(img))
	}
}

// TestFileLeavingMidDecisionIsDecidedAgain: a reload that releases the
// chosen file between the decision and the first byte sends the device the
// current catalog's image (decided again), not a 503; a catalog replaced
// under every decision ends, after a bounded number of tries, in a 503 with
// Retry-After and the reason.
func TestFileLeavingMidDecisionIsDecidedAgain(t *testing.T) {
	for _, tc := range []struct {
		name   string
		swaps  int // catalogs published under the request's decisions
		status int
	}{
		{"one reload", 1, 200},
		{"reloads under every decision", 10, 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var (
				h     *httpapi.Handler
				swaps int
				last  []byte
			)
			record := func(*device.Facts) decide.Record {
				if swaps < tc.swaps {
					swaps++
					last = mustBuild(imagegen.Spec{Family: espimage.ESP8266, Size: 100 << 10, Version: fmt.Sprintf("1.%d.0", swaps), Seed: uint64(20 + swaps)})
					old := h.Catalog()
					h.SetCatalog(diskCatalog(t, map[string][]byte{"fw.bin": last}))
					old.Close(nil) // released: its open file is gone
				}
				return decide.Record{}
			}
			h = httpapi.New(diskCatalog(t, map[string][]byte{"fw.bin": img8266}), httpapi.Options{Record: record})
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := httpapi.Server(h, nil)
			go srv.Serve(httpapi.FixTargets(l))
			defer srv.Close()

			res := emu.New(emu.ESP8266v31).Update(l.Addr().String(), "/fw.bin")
			if res.Status != tc.status {
				t.Fatalf("status %d, want %d: %s %s", res.Status, tc.status, res, res.Headers["x-otabox-reason"])
			}
			switch tc.status {
			case 200:
				if res.Outcome != emu.OK || !bytes.Equal(res.Image, last) {
					t.Errorf("device got %s (%d bytes), want the current catalog's image", res, len(res.Image))
				}
			case 503:
				if why := res.Headers["x-otabox-reason"]; !strings.Contains(why, "left the catalog") || res.Headers["retry-after"] == "" {
					t.Errorf("reason %q, Retry-After %q", why, res.Headers["retry-after"])
				}
				if swaps > 4 {
					t.Errorf("decided %d times", swaps)
				}
			}
		})
	}
}

// TestRewrittenInPlaceIsNotOfferedUntilReadAgain: once a catalog file is
// rewritten in place, a device asking for it gets 503 with Retry-After
// and the reason until a reload has read it again, whether its downloads
// are sent from a kept copy (which still holds the old bytes) or from the
// file itself.
func TestRewrittenInPlaceIsNotOfferedUntilReadAgain(t *testing.T) {
	for _, kept := range []bool{true, false} {
		t.Run(fmt.Sprintf("kept copy %v", kept), func(t *testing.T) {
			dir := writeDir(t, map[string][]byte{"fw.bin": img8266})
			var cat *catalog.Catalog
			if kept {
				cat, _ = keptCatalog(t, dir)
			} else {
				root, err := os.OpenRoot(dir)
				if err != nil {
					t.Fatal(err)
				}
				defer root.Close()
				if cat, err = catalog.Load(root.FS(), catalog.Options{Source: dir}); err != nil {
					t.Fatal(err)
				}
				defer cat.Close(nil)
			}
			o := serveObserved(t, cat, httpapi.Options{})
			f, err := os.OpenFile(filepath.Join(dir, "fw.bin"), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt(img8266v2[:1024], 0) // in place: same inode
			f.Close()
			res := emu.New(emu.ESP8266v31).Update(o.addr, "/fw.bin")
			if res.Status != 503 || res.Headers["retry-after"] == "" || !strings.Contains(res.Headers["x-otabox-reason"], "changed on disk") {
				t.Errorf("after a rewrite in place: %s, Retry-After %q, reason %q", res, res.Headers["retry-after"], res.Headers["x-otabox-reason"])
			}
		})
	}
}
