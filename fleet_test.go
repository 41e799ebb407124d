package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"otabox/appliance/emu"
	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
)

// fleetCatalog writes v1 and v2 of one ESP8266 project and a large ESP32
// image (for downloads that take a while).
func fleetCatalog(t *testing.T) (dir string, v1, v2, big []byte) {
	dir = t.TempDir()
	build := func(s imagegen.Spec) []byte {
		b, err := imagegen.Build(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	v1 = build(imagegen.Spec{Family: espimage.ESP8266, Size: 64 << 10, Project: "meter", Version: "1.0.0", Seed: 1})
	v2 = build(imagegen.Spec{Family: espimage.ESP8266, Size: 70 << 10, Project: "meter", Version: "1.1.0", Seed: 2})
	big = build(imagegen.Spec{Family: espimage.ESP32, Size: 12 << 20, FlashSize: 16 << 20, Project: "cam", Version: "1", Seed: 3})
	os.WriteFile(filepath.Join(dir, "meter-1.0.0.bin"), v1, 0o644)
	os.WriteFile(filepath.Join(dir, "meter-1.1.0.bin"), v2, 0o644)
	os.WriteFile(filepath.Join(dir, "cam.bin"), big, 0o644)
	return dir, v1, v2, big
}

func getBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

type apiDevice struct {
	MAC, State, Running, Sent string
}

// fleetView reads the fleet through all three doors and checks they agree.
func fleetView(t *testing.T, addr, dataDir string) map[string]apiDevice {
	t.Helper()
	var devs []apiDevice
	if err := json.Unmarshal([]byte(getBody(t, "http://"+addr+"/api/devices")), &devs); err != nil {
		t.Fatal(err)
	}
	byMAC := map[string]apiDevice{}
	counts := map[string]int{}
	for _, d := range devs {
		byMAC[d.MAC] = d
		counts[d.State]++
	}
	page := getBody(t, "http://"+addr+"/")
	metrics := getBody(t, "http://"+addr+"/metrics")
	out, err := exec.Command(otabox, "devices", "--data-dir", dataDir).CombinedOutput()
	if err != nil {
		t.Fatalf("otabox devices: %v\n%s", err, out)
	}
	for mac, d := range byMAC {
		if !strings.Contains(page, `data-mac="`+mac+`"`) || !strings.Contains(page, "state-"+d.State) {
			t.Errorf("status page lacks %s in state %q", mac, d.State)
		}
		line := ""
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, mac) {
				line = l
			}
		}
		if d.State != "" && !strings.Contains(line, d.State) {
			t.Errorf("otabox devices says %q for %s, the API %q", line, mac, d.State)
		}
	}
	for state, n := range counts {
		if state == "" {
			state = "none"
		}
		want := fmt.Sprintf(`otabox_devices_by_update_state{state="%s"} %d`, state, n)
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	return byMAC
}

// TestFleetAcrossKill: after device-exact updates, the status page, the
// API, `otabox devices` and /metrics agree; they still agree after a
// kill -9 in the middle of a download, which is recorded as cut off.
func TestFleetAcrossKill(t *testing.T) {
	dir, v1, v2, _ := fleetCatalog(t)
	data := t.TempDir()
	args := []string{"--catalog", dir}
	r := startData(t, data, args...)

	// A: updated, checks in running the new image: confirmed.
	a := emu.New(emu.ESP8266v31)
	a.STAMAC, a.Running, a.Source = "5C:CF:7F:00:00:0A", v1, net.IPv4(127, 9, 0, 1)
	if res := a.Update(r.addr, "/update"); res.Outcome != emu.OK || string(res.Image) != string(v2) {
		t.Fatalf("A: %v", res)
	}
	if res := a.Update(r.addr, "/update"); res.Outcome != emu.NoUpdates {
		t.Fatalf("A again: %v", res)
	}
	// B: updated, but comes back running the old image: failed.
	b := emu.New(emu.ESP8266v27)
	b.STAMAC, b.Running, b.Source = "5C:CF:7F:00:00:0B", v1, net.IPv4(127, 9, 0, 2)
	if res := b.Update(r.addr, "/update"); res.Outcome != emu.OK {
		t.Fatalf("B: %v", res)
	}
	b.Running = v1 // the new image did not boot; it checks in with the old one
	if res := b.Update(r.addr, "/meter-1.0.0.bin"); res.Outcome != emu.NoUpdates {
		t.Fatalf("B check-in: %v", res)
	}

	before := fleetView(t, r.addr, data)
	if before["5C:CF:7F:00:00:0A"].State != "confirmed" || before["5C:CF:7F:00:00:0B"].State != "failed" {
		t.Fatalf("states %+v", before)
	}

	// C starts a big download; otabox is killed with SIGKILL mid-stream.
	c := emu.New(emu.ESP32v30)
	c.STAMAC, c.FreeSpace = "24:0A:C4:00:00:0C", 16<<20
	conn, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.Write(c.UpdateRequest(r.addr, "/cam.bin"))
	br := bufio.NewReader(conn)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("C: %v %v", resp, err)
	}
	io.ReadFull(br, make([]byte, 256<<10))
	// The decision's commit runs while the body streams (only the last
	// bytes wait for it), so a kill this early may come before it: wait
	// until the record holds it, then kill.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, ok := recorded(t, data)["24:0A:C4:00:00:0C"]; ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("C's decision was not recorded within 5 s of its first bytes")
		}
	}
	r.cmd.Process.Signal(syscall.SIGKILL)
	r.cmd.Wait()
	conn.Close()

	r2 := startData(t, data, args...)
	after := fleetView(t, r2.addr, data)
	for mac, d := range before {
		if after[mac].State != d.State || after[mac].Running != d.Running {
			t.Errorf("%s before kill %+v, after %+v", mac, d, after[mac])
		}
	}
	// C received bytes before the kill: it is in the record, cut off.
	if c := after["24:0A:C4:00:00:0C"]; c.State != "cut-off" || c.Sent != "cam.bin" {
		t.Errorf("the download cut by kill -9: %+v", c)
	}
}

// startData starts otabox with the given data dir (start uses a fresh one).
func startData(t *testing.T, data string, args ...string) *running {
	t.Helper()
	return start(t, append([]string{"--data-dir", data}, args...)...)
}
