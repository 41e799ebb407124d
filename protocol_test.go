package main

// Protocol round 2 (issue 13), the parts built so far: version queries
// and autoflash builds.

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"otabox/appliance/emu"
	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
)

// versionQuery sends ESP8266 core 3.1's getAvailableVersion() request:
// the updater's headers with x-ESP8266-mode: version.
func versionQuery(t *testing.T, addr string, d *emu.Device, target string) (*http.Response, []byte) {
	t.Helper()
	req := strings.Replace(string(d.UpdateRequest(addr, target)), "x-ESP8266-mode: sketch", "x-ESP8266-mode: version", 1)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte(req))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

// TestVersionQueries: a file answers its own version, /update the one it
// would serve this device (its own when nothing newer applies), headers
// only; an image with no version is 404 with the reason; none of it is a
// download in the record.
func TestVersionQueries(t *testing.T) {
	dir, v1, v2, _ := fleetCatalog(t)
	plain, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 32 << 10, Seed: 7})
	os.WriteFile(filepath.Join(dir, "plain.bin"), plain, 0o644)
	data := t.TempDir()
	r := startData(t, data, "--catalog", dir)
	old := emu.New(emu.ESP8266v31)
	old.STAMAC, old.Running = "5C:CF:7F:00:70:01", v1
	current := emu.New(emu.ESP8266v31)
	current.STAMAC, current.Running = "5C:CF:7F:00:70:02", v2
	for _, tc := range []struct {
		name    string
		d       *emu.Device
		target  string
		status  int
		version string
		md5     string
	}{
		{"a file", old, "/meter-1.1.0.bin", 200, "1.1.0", md5hex(v2)},
		{"update, something newer", old, "/update", 200, "1.1.0", md5hex(v2)},
		{"update, nothing newer", current, "/update", 200, "1.1.0", md5hex(v2)},
		{"no version known", old, "/plain.bin", 404, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := versionQuery(t, r.addr, tc.d, tc.target)
			if resp.StatusCode != tc.status {
				t.Fatalf("%d %q", resp.StatusCode, resp.Header.Get("X-Otabox-Reason"))
			}
			if tc.status == 404 {
				if !strings.Contains(resp.Header.Get("X-Otabox-Reason"), "has no known version") {
					t.Errorf("reason %q", resp.Header.Get("X-Otabox-Reason"))
				}
				return
			}
			if resp.Header.Get("x-version") != tc.version || resp.Header.Get("x-MD5") != tc.md5 || resp.ContentLength != 0 || len(body) != 0 {
				t.Errorf("x-version %q x-MD5 %q length %d body %d", resp.Header.Get("x-version"), resp.Header.Get("x-MD5"), resp.ContentLength, len(body))
			}
		})
	}
	out, _ := exec.Command(otabox, "devices", "--json", "--data-dir", data).Output()
	if strings.Contains(string(out), `"state": "sent"`) || strings.Contains(string(out), `"downloads": 1`) {
		t.Errorf("a version query was recorded as a download:\n%s", out)
	}
	if !strings.Contains(getBody(t, "http://"+r.addr+"/metrics"), `decision="version"`) {
		t.Error("/metrics does not count version queries")
	}
}

// TestAutoflashImageServedToAnyFlash: an ESP8266 image whose header says
// 16 MB (an autoflash build) is served to a 4 MB device running an
// autoflash build, whose updater skips the flash-size check (the device
// decides); a plain 8 MB build is still refused.
func TestAutoflashImageServedToAnyFlash(t *testing.T) {
	dir := t.TempDir()
	auto, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 64 << 10, FlashSize: 16 << 20, Seed: 21})
	big, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 64 << 10, FlashSize: 8 << 20, Seed: 22})
	os.WriteFile(filepath.Join(dir, "auto.bin"), auto, 0o644)
	os.WriteFile(filepath.Join(dir, "big.bin"), big, 0o644)
	r := start(t, "--catalog", dir)
	d := emu.New(emu.ESP8266v31) // 4 MB of flash
	d.FlashMap = true
	if res := d.Update(r.addr, "/auto.bin"); res.Outcome != emu.OK {
		t.Errorf("autoflash build to a 4 MB device: %v %q", res, res.Headers["x-otabox-reason"])
	}
	d.STAMAC, d.FlashMap = "5C:CF:7F:00:70:03", false
	if res := d.Update(r.addr, "/big.bin"); res.Status != 403 || !strings.Contains(res.Headers["x-otabox-reason"], "built for 8 MB of flash") {
		t.Errorf("8 MB build to a 4 MB device: %v %q", res, res.Headers["x-otabox-reason"])
	}
	out, _ := exec.Command(otabox, "inspect", filepath.Join(dir, "auto.bin")).CombinedOutput()
	if !strings.Contains(string(out), "set by the device at boot (autoflash build)") {
		t.Errorf("inspect:\n%s", out)
	}
}

// TestDeviceCredentials: with --device-password-file, firmware GETs and
// /update without the credentials get 401 with WWW-Authenticate and the
// reason, and with them the image, for both cores' request bytes; the
// catalog stays open for AutoConnectUpdate unless --device-auth-catalog.
func TestDeviceCredentials(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "device")
	os.WriteFile(pw, []byte("fl4sh\n"), 0o600)
	for _, protectCatalog := range []bool{false, true} {
		args := []string{"--device-password-file", pw}
		if protectCatalog {
			args = append(args, "--device-auth-catalog")
		}
		r := start(t, args...)
		for _, tc := range []struct {
			core   emu.Core
			target string
		}{{emu.ESP8266v31, "/blink-esp8266.bin"}, {emu.ESP32v20, "/blink-esp32.bin"}} {
			d := emu.New(tc.core)
			res := d.Update(r.addr, tc.target)
			if res.Status != 401 || res.Headers["www-authenticate"] != `Basic realm="otabox"` || res.Headers["x-otabox-reason"] != "device credentials required (setAuthorization)" {
				t.Errorf("%v without credentials: %v %q", tc.core, res, res.Headers["x-otabox-reason"])
			}
			d.Auth = "otabox:wrong"
			if res := d.Update(r.addr, tc.target); res.Status != 401 || res.Headers["x-otabox-reason"] != "wrong device credentials" {
				t.Errorf("%v with a wrong password: %v %q", tc.core, res, res.Headers["x-otabox-reason"])
			}
			d.Auth = "otabox:fl4sh"
			if res := d.Update(r.addr, tc.target); res.Outcome != emu.OK {
				t.Errorf("%v with credentials: %v %q", tc.core, res, res.Headers["x-otabox-reason"])
			}
		}
		list := emu.New(emu.ESP8266v31).Catalog(r.addr, ".")
		if open := list.Err == ""; open == protectCatalog {
			t.Errorf("--device-auth-catalog=%v: the catalog answered %+v", protectCatalog, list)
		}
		if !strings.Contains(getBody(t, "http://"+r.addr+"/metrics"), `status="401"`) {
			t.Error("/metrics does not count the refusals")
		}
	}
}
