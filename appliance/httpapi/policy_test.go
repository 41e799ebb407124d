package httpapi_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"otabox/appliance/catalog"
	"otabox/appliance/decide"
	"otabox/appliance/device"
	"otabox/appliance/emu"
	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
	"otabox/appliance/httpapi"
	"otabox/appliance/policy"
)

// macIn returns a MAC whose rollout bucket is below (in=true) or at/above pct.
func macIn(pct int, in bool, salt int) string {
	for i := 0; ; i++ {
		mac := fmt.Sprintf("5C:CF:7F:%02X:%02X:%02X", salt, i>>8&255, i&255)
		if (policy.Bucket(mac) < pct) == in {
			return mac
		}
	}
}

// dev is an ESP8266 (core 3.1) running img8266, with room for any test image.
func dev(mac string) *emu.Device {
	d := emu.New(emu.ESP8266v31)
	d.STAMAC, d.FreeSpace, d.Running, d.FlashMode = mac, 4<<20, img8266, 2
	return d
}

// reason is the one-line reason otabox sent with its answer.
func reason(r emu.UpdateResult) string { return r.Headers["x-otabox-reason"] }

// TestPolicyEndToEnd runs each rule with device-exact requests.
func TestPolicyEndToEnd(t *testing.T) {
	fsys := testFS()
	fsys["fw8266-v2.bin"] = file(img8266v2)
	// Larger than the socket buffers, so a download not being read stays open.
	big, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 12 << 20, FlashSize: 16 << 20, Seed: 77})
	fsys["big.bin"] = file(big)
	cat, err := catalog.Load(fsys, catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := httpapi.New(cat, httpapi.Options{UpdatePath: "/update"})
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := httpapi.Server(h, nil)
	go srv.Serve(httpapi.FixTargets(l))
	defer srv.Close()
	addr := l.Addr().String()
	pol, err := policy.Parse([]byte(`
allow 5C:CF:7F:*
group lab 5C:CF:7F:AA:*
pin lab lab/fw8266-1m.bin
rollout fw8266-v2.bin 30%
max-downloads 1
`))
	if err != nil {
		t.Fatal(err)
	}
	h.SetPolicy(pol)

	t.Run("allowlist", func(t *testing.T) {
		res := dev("24:0A:C4:00:00:01").Update(addr, "/fw8266.bin")
		if res.Status != 403 || !strings.Contains(reason(res), "not on the policy's allow list") {
			t.Fatalf("%v %q", res, reason(res))
		}
	})
	t.Run("rollout in", func(t *testing.T) {
		res := dev(macIn(30, true, 1)).Update(addr, "/update")
		if res.Outcome != emu.OK || string(res.Image) != string(img8266v2) {
			t.Fatalf("%v %q", res, reason(res))
		}
	})
	t.Run("rollout out", func(t *testing.T) {
		for _, target := range []string{"/update", "/fw8266-v2.bin"} {
			res := dev(macIn(30, false, 2)).Update(addr, target)
			if res.Status != 304 || !strings.Contains(reason(res), "outside the 30% rollout") {
				t.Fatalf("%s: %v %q", target, res, reason(res))
			}
		}
	})
	t.Run("pinned group", func(t *testing.T) {
		d := dev("5C:CF:7F:AA:00:01")
		d.ChipSize = 4 << 20
		res := d.Update(addr, "/update")
		if res.Outcome != emu.OK || string(res.Image) != string(img8266_1) {
			t.Fatalf("%v %q", res, reason(res))
		}
		if again := d.Update(addr, "/update"); again.Status != 304 {
			t.Fatalf("after the pin: %v %q", again, reason(again))
		}
		// Others never get the pinned image from /update.
		other := dev(macIn(30, false, 3))
		other.Running = img8266_1
		if res := other.Update(addr, "/update"); res.Status != 304 {
			t.Fatalf("outside the group: %v %q", res, reason(res))
		}
	})
	t.Run("max downloads", func(t *testing.T) {
		// Hold one download open by not reading it.
		hold, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer hold.Close()
		holder := dev("5C:CF:7F:00:00:09")
		holder.FreeSpace, holder.ChipSize = 16<<20, 16<<20
		hold.Write(holder.UpdateRequest(addr, "/big.bin"))
		resp, err := http.ReadResponse(bufio.NewReader(hold), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%v %v", resp, err)
		}
		var res emu.UpdateResult
		for i := 0; i < 50; i++ { // until the held download is registered
			if res = dev("5C:CF:7F:00:00:0A").Update(addr, "/lab/fw8266-1m.bin"); res.Status == 503 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if res.Status != 503 || res.Headers["retry-after"] != "30" || !strings.Contains(reason(res), "allows 1 at once") {
			t.Fatalf("%v %q retry-after %q", res, reason(res), res.Headers["retry-after"])
		}
		hold.Close() // the held download is cut off: its place frees up
		for i := 0; ; i++ {
			res := dev("5C:CF:7F:00:00:0B").Update(addr, "/lab/fw8266-1m.bin")
			if res.Outcome == emu.OK {
				break
			}
			if i == 100 {
				t.Fatalf("after the download ended: %v %q", res, reason(res))
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// TestBatchComesFirst: a batch gives its image over a pin and over the
// device's own project, 304 once the device runs it; the allow list
// still refuses; a batch image the catalog lacks is 304 with the reason.
func TestBatchComesFirst(t *testing.T) {
	cat, err := catalog.Load(testFS(), catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	batch := &decide.Batch{Name: "tray-1", Image: "fw8266-v2.bin"}
	h := httpapi.New(cat, httpapi.Options{UpdatePath: "/update", Batch: func(*device.Facts) *decide.Batch { return batch }})
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := httpapi.Server(h, nil)
	go srv.Serve(httpapi.FixTargets(l))
	defer srv.Close()
	addr := l.Addr().String()
	pol, err := policy.Parse([]byte("allow 5C:CF:7F:*\ngroup lab 5C:CF:7F:AA:*\npin lab lab/fw8266-1m.bin\n"))
	if err != nil {
		t.Fatal(err)
	}
	h.SetPolicy(pol)
	cat2 := testFS()
	cat2["fw8266-v2.bin"] = file(img8266v2)
	full, err := catalog.Load(cat2, catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}

	res := dev("5C:CF:7F:AA:00:01").Update(addr, "/update")
	if res.Status != 304 || reason(res) != "batch tray-1 gives fw8266-v2.bin, which is not in the catalog" {
		t.Errorf("batch image missing: %v %q", res, reason(res))
	}
	h.SetCatalog(full)
	d := dev("5C:CF:7F:AA:00:01") // pinned to lab/fw8266-1m.bin
	if res := d.Update(addr, "/update"); res.Outcome != emu.OK || string(res.Image) != string(img8266v2) {
		t.Errorf("pinned device in a batch: %v %q", res, reason(res))
	}
	if res := d.Update(addr, "/update"); res.Status != 304 || !strings.Contains(reason(res), "already runs fw8266-v2.bin") {
		t.Errorf("running the batch image: %v %q", res, reason(res))
	}
	if res := dev("24:0A:C4:00:00:01").Update(addr, "/update"); res.Status != 403 || !strings.Contains(reason(res), "allow list") {
		t.Errorf("a batch does not override the allow list: %v %q", res, reason(res))
	}
}

// TestPinToAnImageBeingReadIs503: a group pinned to a file that is in
// the folder but not read yet gets 503 with Retry-After and the reason
// from /update (never another image, never the 304 of a missing one);
// once the file is read, the pinned image itself.
func TestPinToAnImageBeingReadIs503(t *testing.T) {
	dir := t.TempDir()
	pinned := mustBuild(imagegen.Spec{Family: espimage.ESP8266, Size: 64 << 10, Project: "blink", Version: "9.0.0", Seed: 90})
	os.WriteFile(filepath.Join(dir, "fw8266.bin"), img8266, 0o644)
	os.WriteFile(filepath.Join(dir, "pinned.bin"), pinned, 0o644)
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	cat, err := catalog.Load(root.FS(), catalog.Options{Source: dir, Budget: -1}) // nothing read yet
	if err != nil {
		t.Fatal(err)
	}
	if !cat.Pending("pinned.bin") {
		t.Fatal("pinned.bin is not pending")
	}
	h := httpapi.New(cat, httpapi.Options{UpdatePath: "/update"})
	pol, err := policy.Parse([]byte("group lab 5C:CF:7F:*\npin lab pinned.bin\n"))
	if err != nil {
		t.Fatal(err)
	}
	h.SetPolicy(pol)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := httpapi.Server(h, nil)
	go srv.Serve(httpapi.FixTargets(l))
	defer srv.Close()
	d := dev("5C:CF:7F:00:00:01")
	res := d.Update(l.Addr().String(), "/update")
	if res.Status != 503 || res.Headers["retry-after"] != "5" || reason(res) != "group lab is pinned to pinned.bin, which is still being read and hashed; retry shortly" {
		t.Fatalf("pinned to a pending file: %v %q retry-after %q", res, reason(res), res.Headers["retry-after"])
	}
	read, err := catalog.Load(root.FS(), catalog.Options{Source: dir})
	if err != nil {
		t.Fatal(err)
	}
	h.SetCatalog(read)
	if res := d.Update(l.Addr().String(), "/update"); res.Outcome != emu.OK || string(d.Running) != string(pinned) {
		t.Fatalf("once read: %v %q", res, reason(res))
	}
}
