package appliance

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"otabox/appliance/emu"
	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
)

// TestNoDescriptorOrGoroutineGrowthAfter10000Requests: ten thousand
// requests of every kind a field sees (keep-alive listings, downloads
// from fresh devices, 304 check-ins, HEAD and Range probes, refusals,
// a device that drops its link mid-download, a client that leaves after
// half a head) leave the server with the descriptors and goroutines it
// had after the first thousand: nothing a device does is held.
func TestNoDescriptorOrGoroutineGrowthAfter10000Requests(t *testing.T) {
	if _, err := os.ReadDir("/proc/self/fd"); err != nil {
		t.Skipf("no /proc/self/fd to count descriptors: %v", err)
	}
	dir := t.TempDir()
	img, err := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 16 << 10, Project: "app", Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "app.bin"), img, 0o644)
	addr := serveRecorded(t, dir)

	// Each worker is a site's worth of devices behind one address (the
	// server caps connections per address); the client that leaves after
	// half a head comes from an address of its own, where the cap
	// refuses most of them, as it should.
	from := func(n int) net.IP { return net.IPv4(127, 0, 1, byte(n%16+1)) }
	device := func(n int) *emu.Device {
		d := emu.New(emu.ESP8266v31)
		d.Source = from(n)
		return d
	}
	kinds := []func(n int) error{
		func(n int) error { // AutoConnect's catalog loop: listings on one kept-alive connection
			return keptAlive(from(n), addr, device(n).CatalogRequest(addr, "/"), 4)
		},
		func(n int) error { // a fresh device downloads the image
			d := device(n)
			d.STAMAC = fmt.Sprintf("5C:CF:7F:%02X:%02X:%02X", n>>16&0xff, n>>8&0xff, n&0xff)
			if r := d.Update(addr, "/app.bin"); r.Outcome != emu.OK {
				return fmt.Errorf("fresh device: %v", r)
			}
			return nil
		},
		func(n int) error { // a device running the image checks in
			d := device(n)
			d.STAMAC, d.Running = "5C:CF:7E:00:00:01", img
			if r := d.Update(addr, "/app.bin"); r.Status != 304 {
				return fmt.Errorf("check-in: %v", r)
			}
			return nil
		},
		func(n int) error { // ESP-IDF's HEAD and its size probe
			if err := keptAlive(from(n), addr, []byte("HEAD /app.bin HTTP/1.1\r\nHost: x\r\nUser-Agent: ESP32 HTTP Client/1.0\r\n\r\n"), 1); err != nil {
				return err
			}
			return keptAlive(from(n), addr, []byte("GET /app.bin HTTP/1.1\r\nHost: x\r\nUser-Agent: ESP32 HTTP Client/1.0\r\nRange: bytes=0-0\r\n\r\n"), 1)
		},
		func(n int) error { // refusals: a missing file, a path out of the catalog
			if err := keptAlive(from(n), addr, []byte("GET /missing.bin HTTP/1.1\r\nHost: x\r\n\r\n"), 1); err != nil {
				return err
			}
			return keptAlive(from(n), addr, []byte("GET /../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n"), 1)
		},
		func(n int) error { // a device whose link drops after 4 KB
			d := device(n)
			d.STAMAC, d.CutAfter = fmt.Sprintf("5C:CF:7D:%02X:%02X:%02X", n>>16&0xff, n>>8&0xff, n&0xff), 4<<10
			d.Timeout = 2 * time.Second
			d.Update(addr, "/app.bin")
			return nil
		},
		func(n int) error { // a client that sends half a head and goes
			c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 2, 1)}}).Dial("tcp", addr)
			if err != nil {
				return nil // refused by the per-address cap
			}
			c.Write([]byte("GET /app.bin HTTP/1.1\r\nHo"))
			return c.Close()
		},
	}
	// requests made by one round of kinds: listings count 4, probes and refusals 2
	const perRound = 4 + 1 + 1 + 2 + 2 + 1 + 1
	drive := func(requests int) {
		t.Helper()
		rounds := requests / perRound
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		work := make(chan int)
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for round := range work {
					for _, k := range kinds {
						if err := k(round*16 + w); err != nil {
							select {
							case errs <- err:
							default:
							}
						}
					}
				}
			}()
		}
		for n := 0; n < rounds; n++ {
			work <- requests + n // the rounds of each drive have MACs of their own
		}
		close(work)
		wg.Wait()
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
	}
	quiet := func() (fds, goroutines int) {
		// Connections end on the server a moment after the client goes:
		// take the lowest of a few looks, once the numbers stop falling.
		low := func() (int, int) {
			e, _ := os.ReadDir("/proc/self/fd")
			return len(e), runtime.NumGoroutine()
		}
		fds, goroutines = low()
		for i := 0; i < 50; i++ {
			time.Sleep(100 * time.Millisecond)
			f, g := low()
			if f >= fds && g >= goroutines && i >= 5 {
				break
			}
			fds, goroutines = min(fds, f), min(goroutines, g)
		}
		return fds, goroutines
	}
	drive(1000)
	fds0, g0 := quiet()
	drive(10_000)
	var fds1, g1 int
	deadline := time.Now().Add(15 * time.Second)
	for {
		fds1, g1 = quiet()
		if fds1 <= fds0+2 && g1 <= g0+4 || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("after 1,000 requests: %d descriptors, %d goroutines; after 10,000 more: %d, %d", fds0, g0, fds1, g1)
	if fds1 > fds0+2 || g1 > g0+4 {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("grew: descriptors %d → %d, goroutines %d → %d; goroutines now:\n%s", fds0, fds1, g0, g1, buf)
	}
}

// keptAlive sends req n times on one connection and reads each answer.
func keptAlive(from net.IP, addr string, req []byte, n int) error {
	c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: from}}).Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	method := "GET"
	if req[0] == 'H' {
		method = "HEAD"
	}
	for i := 0; i < n; i++ {
		if _, err := c.Write(req); err != nil {
			return err
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			return fmt.Errorf("%.40q: %w", req, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return nil
}
