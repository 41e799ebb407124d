package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"otabox/appliance/emu"
)

// TestManyBoxesReadAsOneFleet: the README's "Many boxes": three boxes
// stream their records to replicas (folders here, as a NAS share would
// be mounted); otabox hub over the three lists every device once with
// its box, and a batch two bench stations ran under one name is one
// report with both stations' boards. A device a box records later shows
// on the hub after its next refresh, and a box whose replica cannot be
// read is shown as such while the others are served.
func TestManyBoxesReadAsOneFleet(t *testing.T) {
	t.Parallel()
	dir, v1, v2, _ := fleetCatalog(t)
	nas := t.TempDir()
	type box struct {
		name string
		r    *running
		data string
		macs []string
	}
	var boxes []*box
	for i, name := range []string{"site-1", "bench-a", "bench-b"} {
		b := &box{name: name, data: t.TempDir()}
		b.r = startData(t, b.data, "--catalog", dir, "--replicate", "file://"+filepath.Join(nas, name), "--log", "warn")
		if strings.HasPrefix(name, "bench") {
			if _, err := otaboxCmd(t, "batch", "start", "tray-7", "--image", "meter-1.1.0.bin", "--expect", "3", "--catalog", dir, "--data-dir", b.data); err != nil {
				t.Fatal(err)
			}
		}
		for j := 0; j < 3; j++ {
			d := emu.New(emu.ESP8266v31)
			d.STAMAC, d.Running, d.Source = macN("5C:CF:7F", 0x70000+i*16+j), v1, net.IPv4(127, 40, byte(i), byte(j+1))
			target := "/meter-1.1.0.bin"
			if strings.HasPrefix(name, "bench") {
				target = "/update"
			}
			if res := d.Update(b.r.addr, target); res.Outcome != emu.OK {
				t.Fatalf("%s: device %d: %v %q", name, j, res, res.Headers["x-otabox-reason"])
			}
			d.Running = v2
			d.Update(b.r.addr, "/update") // back, running it: confirmed
			b.macs = append(b.macs, d.STAMAC)
		}
		boxes = append(boxes, b)
	}
	for _, b := range boxes {
		inSync(t, b.r, 15*time.Second)
	}

	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	args := []string{"hub", "-b", "127.0.0.1", "-p", strconv.Itoa(port), "--dir", t.TempDir(), "--refresh", "1s"}
	for _, b := range boxes {
		args = append(args, "--box", b.name+"=file://"+filepath.Join(nas, b.name))
	}
	args = append(args, "--box", "gone=file://"+filepath.Join(nas, "never-replicated"))
	hub := startHub(t, port, args...)

	var devs []struct {
		Box string `json:"box"`
		MAC string `json:"mac"`
	}
	eventually(t, 20*time.Second, "every device of the three boxes on the hub", func() bool {
		devs = devs[:0]
		json.Unmarshal([]byte(getBody(t, hub+"/api/devices")), &devs)
		return len(devs) == 9
	})
	seen := map[string]string{}
	for _, d := range devs {
		if seen[d.MAC] != "" {
			t.Errorf("%s listed twice (%s and %s)", d.MAC, seen[d.MAC], d.Box)
		}
		seen[d.MAC] = d.Box
	}
	for _, b := range boxes {
		for _, mac := range b.macs {
			if seen[mac] != b.name {
				t.Errorf("%s is listed under box %q, want %s", mac, seen[mac], b.name)
			}
		}
	}

	resp, err := http.Get(hub + "/api/batches/tray-7?format=csv")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the combined report: %v %v", err, resp)
	}
	rows, err := csv.NewReader(resp.Body).ReadAll()
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	stations := map[string]int{}
	for _, row := range rows[1:] {
		stations[row[col["station"]]]++
		if row[col["result"]] != "confirmed" {
			t.Errorf("board %s: %s", row[col["mac"]], row[col["result"]])
		}
	}
	if len(rows) != 7 || stations["bench-a"] != 3 || stations["bench-b"] != 3 {
		t.Errorf("the combined report of tray-7 has %d boards by station %v, want 3 of bench-a and 3 of bench-b", len(rows)-1, stations)
	}
	if html := getBody(t, hub+"/api/batches/tray-7?format=html"); !strings.Contains(html, "6 passed of 6 expected") {
		t.Error("the combined HTML report does not say 6 passed of 6 expected")
	}

	// A device the first box records later: on the hub after a refresh.
	d := emu.New(emu.ESP8266v31)
	d.STAMAC, d.Running = macN("5C:CF:7F", 0x7FFFF), v2
	d.Update(boxes[0].r.addr, "/update")
	eventually(t, 20*time.Second, "a device recorded after the hub started", func() bool {
		return strings.Contains(getBody(t, hub+"/api/devices?mac="+d.STAMAC), `"box": "site-1"`)
	})

	var bs []struct {
		Box     string `json:"box"`
		Devices int    `json:"devices"`
		Err     string `json:"error"`
	}
	json.Unmarshal([]byte(getBody(t, hub+"/api/boxes")), &bs)
	if len(bs) != 4 || bs[3].Box != "gone" || !strings.Contains(bs[3].Err, "holds no fleet record") || bs[0].Devices != 4 {
		t.Errorf("/api/boxes: %+v", bs)
	}
	if h := getBody(t, hub+"/healthz"); !strings.HasPrefix(h, "degraded: box gone: ") {
		t.Errorf("/healthz with a box unread: %q", h)
	}
	if page := getBody(t, hub+"/"); !strings.Contains(page, "bench-b") || !strings.Contains(page, d.STAMAC) {
		t.Error("the hub's page lacks a box or a device")
	}
}

// startHub starts otabox hub and returns its base URL once it answers.
func startHub(t *testing.T, port int, args ...string) string {
	t.Helper()
	cmd := exec.Command(otabox, args...)
	var log strings.Builder
	cmd.Stderr = &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("otabox hub's log:\n%s", log.String())
		}
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	for i := 0; i < 100; i++ {
		if resp, err := http.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			return base
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("otabox hub did not answer:\n%s", log.String())
	return ""
}

// eventually polls cond every 200 ms until it holds, failing the test
// with what was awaited after within.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
	}
}
