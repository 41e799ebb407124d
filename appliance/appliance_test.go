package appliance

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"otabox/appliance/emu"
	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
)

// TestReloadUnderLoad: 50 devices download continuously while files in the
// catalog directory are replaced, added, half-written and removed. Every
// download that completes has exactly the bytes of one of the images and
// of the x-MD5 it was given; the rest are clean 404s for files that left,
// 503s for a file modified in place and not yet re-read, or downloads of
// such a file cut off before their end (disk images are served from the
// file, pinned: a rename or a removal does not touch a running download,
// an in-place rewrite does).
func TestReloadUnderLoad(t *testing.T) {
	dir := t.TempDir()
	images := make([][]byte, 6)
	for i := range images {
		b, err := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: (48 + 16*i) << 10, Seed: uint64(i)})
		if err != nil {
			t.Fatal(err)
		}
		images[i] = b
	}
	names := []string{"a.bin", "b.bin", "c.bin", "d.bin"}
	for i, n := range names {
		os.WriteFile(filepath.Join(dir, n), images[i], 0o644)
	}
	src, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Addr: "127.0.0.1:0", Firmware: src, Settle: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	serve(t, a)
	addr := a.Addr().String()

	stop := make(chan struct{})
	var (
		ok, gone, other, faults atomic.Int64
		retry, cut              atomic.Int64
		bytesOK                 atomic.Int64
		wg                      sync.WaitGroup
		failures                sync.Map
	)
	for w := 0; w < 50; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for {
				select {
				case <-stop:
					return
				default:
				}
				d := emu.New(emu.ESP8266v31)
				d.FreeSpace = 4 << 20
				d.STAMAC = fmt.Sprintf("5C:CF:7F:00:00:%02X", w)
				d.Source = net.IPv4(127, 5, 0, byte(w+1)) // a fleet, not one address
				res := d.Update(addr, "/"+names[rng.IntN(len(names))])
				switch {
				case res.Outcome == emu.OK:
					known := false
					for _, img := range images {
						known = known || string(img) == string(res.Image)
					}
					if !known {
						failures.Store("completed with bytes of no image", true)
					}
					ok.Add(1)
					bytesOK.Add(int64(len(res.Image)))
				case res.Status == 404:
					gone.Add(1)
				case res.Status == 304:
					other.Add(1)
				case res.Status == 503 && strings.Contains(res.Headers["x-otabox-reason"], "changed on disk"):
					retry.Add(1)
				case res.Status == 200 && (strings.Contains(res.Error, "Stream Read Timeout") || strings.Contains(res.Error, "Verify Bin Header Failed")):
					cut.Add(1) // cut off: a rewrite in place reached it
				default:
					faults.Add(1)
					failures.Store(res.String()+" "+res.Headers["x-otabox-reason"], true)
				}
			}
		}(w)
	}
	// Change the catalog under the load for 3 seconds.
	changes := 0
	rng := rand.New(rand.NewPCG(99, 1))
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); changes++ {
		n := filepath.Join(dir, names[rng.IntN(len(names))])
		img := images[rng.IntN(len(images))]
		switch changes % 4 {
		case 0: // replace in place
			os.WriteFile(n, img, 0o644)
		case 1: // half-written, finished a little later
			os.WriteFile(n, img[:len(img)/2], 0o644)
			time.Sleep(50 * time.Millisecond)
			os.WriteFile(n, img, 0o644)
		case 2: // removed
			os.Remove(n)
		case 3: // added back by rename, as careful copiers do
			tmp := filepath.Join(dir, ".incoming")
			os.WriteFile(tmp, img, 0o644)
			os.Rename(tmp, n)
		}
		time.Sleep(time.Duration(50+rng.IntN(100)) * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("%d catalog changes; %d downloads verified (%d MB), %d 404 for files that had left, %d 503 for files being re-read, %d cut off by a rewrite in place, %d no-update, %d faults",
		changes, ok.Load(), bytesOK.Load()>>20, gone.Load(), retry.Load(), cut.Load(), other.Load(), faults.Load())
	failures.Range(func(k, _ any) bool { t.Errorf("device saw: %s", k); return true })
	if ok.Load() < 100 {
		t.Errorf("only %d downloads completed", ok.Load())
	}
}

// TestPolicyReload: a policy re-read with a mistake in it is refused with
// its line and reason, and the policy in force stays.
func TestPolicyReload(t *testing.T) {
	dir := t.TempDir()
	fw, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 32 << 10})
	os.WriteFile(filepath.Join(dir, "fw.bin"), fw, 0o644)
	polFile := filepath.Join(dir, "..", filepath.Base(dir)+".policy")
	os.WriteFile(polFile, []byte("allow 5C:CF:7F:*\n"), 0o644)
	src, _ := OpenDir(dir)
	var logs syncBuffer
	a, err := New(Config{Addr: "127.0.0.1:0", Firmware: src, Policy: polFile, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	serve(t, a)
	outsider := emu.New(emu.ESP8266v31)
	outsider.STAMAC = "24:0A:C4:00:00:01"
	check := func(when string) {
		t.Helper()
		if res := outsider.Update(a.Addr().String(), "/fw.bin"); res.Status != 403 {
			t.Fatalf("%s: %v", when, res)
		}
	}
	check("first policy")
	os.WriteFile(polFile, []byte("allow 5C:CF:7F:*\nallow everyone\n"), 0o644)
	a.reloadPolicy()
	check("after a bad reload")
	if !strings.Contains(logs.String(), ".policy:2: ") || !strings.Contains(logs.String(), "previous one stays in force") {
		t.Errorf("log does not say why:\n%s", logs.String())
	}
	os.WriteFile(polFile, []byte("allow 24:0A:C4:*\n"), 0o644)
	a.reloadPolicy()
	if res := outsider.Update(a.Addr().String(), "/fw.bin"); res.Outcome != emu.OK {
		t.Fatalf("after a good reload: %v", res)
	}
}

// serve runs a until the test ends, then shuts it down.
func serve(t *testing.T, a *Appliance) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// serveRecorded serves the catalog folder dir with a fleet record and
// /update, as a field box does, until the test ends; it returns the
// address.
func serveRecorded(t *testing.T, dir string) string {
	t.Helper()
	src, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Addr: "127.0.0.1:0", Firmware: src, DataDir: t.TempDir(), UpdatePath: "/update", Settle: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	serve(t, a)
	return a.Addr().String()
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestUnwritableDataDir: a data dir that cannot be opened is logged and
// devices are still served.
func TestUnwritableDataDir(t *testing.T) {
	dir := t.TempDir()
	fw, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 32 << 10})
	os.WriteFile(filepath.Join(dir, "fw.bin"), fw, 0o644)
	blocker := filepath.Join(t.TempDir(), "file")
	os.WriteFile(blocker, nil, 0o644) // a file where the data dir should be
	src, _ := OpenDir(dir)
	var logs syncBuffer
	a, err := New(Config{Addr: "127.0.0.1:0", Firmware: src, DataDir: filepath.Join(blocker, "data"), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	serve(t, a)
	if res := emu.New(emu.ESP8266v31).Update(a.Addr().String(), "/fw.bin"); res.Outcome != emu.OK {
		t.Fatalf("%v", res)
	}
	if !strings.Contains(logs.String(), "store unavailable") {
		t.Errorf("no warning:\n%s", logs.String())
	}
}

// TestOpenStatusPageWarns: no admin password on a non-loopback address:
// one start-up WARN says the page shows MACs and IPs and how to protect it.
func TestOpenStatusPageWarns(t *testing.T) {
	dir := t.TempDir()
	fw, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 32 << 10})
	os.WriteFile(filepath.Join(dir, "fw.bin"), fw, 0o644)
	src, _ := OpenDir(dir)
	for _, tc := range []struct {
		addr, password string
		warn           bool
	}{{"0.0.0.0:0", "", true}, {"0.0.0.0:0", "pw", false}, {"127.0.0.1:0", "", false}} {
		var logs syncBuffer
		a, err := New(Config{Addr: tc.addr, Firmware: src, AdminPassword: tc.password, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		a.ln.Close() // listened, never served: no traffic leaves this machine
		if got := strings.Contains(logs.String(), "level=WARN msg=\"the status page and /api/* show every device's MAC and IP to anyone on the LAN; set --admin-password-file"); got != tc.warn {
			t.Errorf("%s password %q: warned %v\n%s", tc.addr, tc.password, got, logs.String())
		}
	}
}
