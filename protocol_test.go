package main

// Protocol round 2 (issue 13): version queries, autoflash builds, device
// credentials, signed images (--verify-key, inspect --key) and
// anti-rollback.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto"
	"crypto/md5"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"otabox/appliance/emu"
	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
	"otabox/appliance/fsimage"
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
	os.WriteFile(filepath.Join(dir, "data.littlefs.bin"), fsimage.Build(4096, 128), 0o644) // 512 KB
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not firmware\n"), 0o644)
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
		{"a filesystem image", old, "/data.littlefs.bin", 404, "", ""},
		{"a file that is not firmware", old, "/notes.txt", 404, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := versionQuery(t, r.addr, tc.d, tc.target)
			if resp.StatusCode != tc.status {
				t.Fatalf("%d %q", resp.StatusCode, resp.Header.Get("X-Otabox-Reason"))
			}
			if tc.status == 404 {
				if !strings.Contains(resp.Header.Get("X-Otabox-Reason"), "has no known version") || len(body) != 0 || resp.ContentLength != 0 {
					t.Errorf("reason %q, %d body bytes (Content-Length %d): a version query is never a download", resp.Header.Get("X-Otabox-Reason"), len(body), resp.ContentLength)
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
			shows  string // getLastErrorString(): arduino-esp32's HTTPUpdate has no 401 case (-104)
		}{{emu.ESP8266v31, "/blink-esp8266.bin", "Unauthorized (401)"}, {emu.ESP32v20, "/blink-esp32.bin", "Wrong HTTP Code"}} {
			d := emu.New(tc.core)
			res := d.Update(r.addr, tc.target)
			if res.Status != 401 || res.Error != tc.shows || res.Headers["www-authenticate"] != `Basic realm="otabox"` || res.Headers["x-otabox-reason"] != "device credentials required (setAuthorization)" {
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

// TestDevicePasswordGuessingLockedOut: five wrong device passwords from
// one address within a minute lock it out, as the admin page's do: the
// sixth request, even with the right password, gets 429 with
// Retry-After and the reason; the lock-out is one WARN, the refusals
// that follow are not each a WARN; another address is still served.
func TestDevicePasswordGuessingLockedOut(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "device")
	os.WriteFile(pw, []byte("fl4sh\n"), 0o600)
	r := start(t, "--device-password-file", pw)
	guesser := emu.New(emu.ESP8266v31)
	guesser.Source = net.IPv4(127, 0, 0, 9)
	guesser.Auth = "otabox:guess"
	for i := 1; i <= 5; i++ {
		if res := guesser.Update(r.addr, "/blink-esp8266.bin"); res.Status != 401 {
			t.Fatalf("wrong password %d: %v", i, res)
		}
	}
	guesser.Auth = "otabox:fl4sh"
	for i := 0; i < 50; i++ {
		res := guesser.Update(r.addr, "/blink-esp8266.bin")
		if res.Status != 429 || res.Headers["retry-after"] == "" || !strings.HasPrefix(res.Headers["x-otabox-reason"], "too many wrong device passwords from 127.0.0.9") {
			t.Fatalf("locked out, try %d: %v %q retry-after %q", i, res, res.Headers["x-otabox-reason"], res.Headers["retry-after"])
		}
	}
	other := emu.New(emu.ESP8266v31)
	other.Source = net.IPv4(127, 0, 0, 10)
	other.Auth = "otabox:fl4sh"
	if res := other.Update(r.addr, "/blink-esp8266.bin"); res.Outcome != emu.OK {
		t.Fatalf("another address: %v", res)
	}
	waitLog(t, r, "device: wrong password; address locked out")
	waitLog(t, r, "client=127.0.0.10:") // the last request: every line before it is read
	if n := strings.Count(r.log.all.String(), "status=429"); n > 0 {
		t.Errorf("%d refusals of a locked-out address logged at WARN, want only the lock-out", n)
	}
}

// siteKey is a signing key made for the test: the private half signs
// images, the public half is written as PEM for --verify-key.
type siteKey struct {
	priv crypto.Signer
	pem  string // path of the public key file
	pub  *espimage.Key
}

func newSiteKey(t *testing.T, kind string) siteKey {
	t.Helper()
	priv, text, err := imagegen.NewKey(kind)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), kind+".pem")
	if err := os.WriteFile(path, text, 0o644); err != nil {
		t.Fatal(err)
	}
	pub, err := espimage.ParseKey(kind+".pem", text)
	if err != nil {
		t.Fatal(err)
	}
	return siteKey{priv, path, pub}
}

// mustSign returns a function that unwraps a signer's result or fails t.
func mustSign(t *testing.T) func([]byte, error) []byte {
	return func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
}

// TestSignedImagesServedAnd304InEveryFlashMode: a signing.py image and a
// Secure Boot v2 image are catalog images; a device running one gets 304
// whatever flash mode its chip rewrote into the header (the digest covers
// the image without the signature, as getSketchMD5 does); a new device gets
// the whole file with x-MD5 of the whole file, and a signed-update device
// checks the signature and boots it.
func TestSignedImagesServedAnd304InEveryFlashMode(t *testing.T) {
	ok := mustSign(t)
	site, sb := newSiteKey(t, "rsa2048"), newSiteKey(t, "rsa3072")
	base, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 48 << 10, Project: "meter", Version: "1.4.0", Seed: 31})
	meter := ok(imagegen.SignESP8266(base, site.priv, false))
	app, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP32, Chip: espimage.ChipESP32S3, Size: 48 << 10, Project: "gate", Version: "3.0.1", Seed: 32})
	gate := ok(imagegen.SignSecureBootV2(app, sb.priv))
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "meter.bin"), meter, 0o644)
	os.WriteFile(filepath.Join(dir, "gate.bin"), gate, 0o644)
	os.WriteFile(filepath.Join(dir, "plain.bin"), base, 0o644)
	r := start(t, "--catalog", dir)

	fresh := emu.New(emu.ESP8266v31)
	fresh.SigningKey = site.pub
	res := fresh.Update(r.addr, "/meter.bin")
	sum := md5.Sum(meter)
	if res.Outcome != emu.OK || res.MD5 != hex.EncodeToString(sum[:]) || len(res.Image) != len(meter) || res.Headers["x-md5"] != res.MD5 {
		t.Fatalf("signed image to a signed-update device: %v %q (x-MD5 %s)", res, res.Headers["x-otabox-reason"], res.Headers["x-md5"])
	}
	for mode := espimage.FlashMode(0); mode <= 3; mode++ {
		d := emu.New(emu.ESP8266v31)
		d.STAMAC, d.FlashMode, d.Running = macN("5C:CF:7F", 0x5C0000+int(mode)), mode, meter
		if res := d.Update(r.addr, "/meter.bin"); res.Status != 304 {
			t.Errorf("device running the signed image on a %s chip: %v %q", mode, res, res.Headers["x-otabox-reason"])
		}
	}
	esp32 := emu.New(emu.ESP32v20)
	esp32.Chip = espimage.ChipESP32S3
	if res := esp32.Update(r.addr, "/gate.bin"); res.Outcome != emu.OK || len(res.Image) != len(gate) {
		t.Fatalf("Secure Boot v2 image: %v %q", res, res.Headers["x-otabox-reason"])
	}
	if res := esp32.Update(r.addr, "/gate.bin"); res.Status != 304 {
		t.Errorf("ESP32 running the signed image: %v %q", res, res.Headers["x-otabox-reason"])
	}
	unsigned := emu.New(emu.ESP8266v31)
	unsigned.STAMAC, unsigned.SigningKey = macN("5C:CF:7F", 0x5C0100), site.pub
	if res := unsigned.Update(r.addr, "/plain.bin"); res.Outcome == emu.OK || !strings.Contains(res.Error, "Signature verification failed") {
		t.Errorf("an unsigned image reached a signed-update device's flash: %v", res)
	}
}

// TestLegacySignedImageNeverSentToACoreThatRejectsIt: under --verify-key
// otabox knows each ESP8266 signature's form, and a device that sends
// x-ESP8266-Chip-ID runs core 2.6.0 or later, which checks only the
// openssl dgst form: a legacy-signed image (signing.py --legacy) is
// refused to it before a byte with the reason, and /update passes over
// it, while a core 2.5 device (no Chip-ID, the legacy verifier) takes it.
// Each emulated core checks the signature as its Updater does, so the
// refused case would otherwise fail after the whole download.
func TestLegacySignedImageNeverSentToACoreThatRejectsIt(t *testing.T) {
	ok := mustSign(t)
	site := newSiteKey(t, "rsa2048")
	v14, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 48 << 10, Project: "meter", Version: "1.4.0", Seed: 51})
	v15, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 48 << 10, Project: "meter", Version: "1.5.0", Seed: 52})
	good, legacy := ok(imagegen.SignESP8266(v14, site.priv, false)), ok(imagegen.SignESP8266(v15, site.priv, true))
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "meter-1.4.bin"), good, 0o644)
	os.WriteFile(filepath.Join(dir, "meter-1.5.bin"), legacy, 0o644)
	r := start(t, "--catalog", dir, "--verify-key", site.pem)
	device := func(core emu.Core, mac string) *emu.Device {
		d := emu.New(core)
		d.STAMAC, d.SigningKey = mac, site.pub
		return d
	}

	if res := device(emu.ESP8266v31, "5C:CF:7F:00:72:01").Update(r.addr, "/meter-1.5.bin"); res.Status != 403 || !strings.Contains(res.Headers["x-otabox-reason"], "signed in the legacy rsautl form") {
		t.Errorf("legacy-signed image to core 3.1: %v %q", res, res.Headers["x-otabox-reason"])
	}
	if res := device(emu.ESP8266v31, "5C:CF:7F:00:72:02").Update(r.addr, "/meter-1.4.bin"); res.Outcome != emu.OK {
		t.Errorf("dgst-signed image to core 3.1: %v %q", res, res.Headers["x-otabox-reason"])
	}
	if res := device(emu.ESP8266v25, "5C:CF:7F:00:72:03").Update(r.addr, "/meter-1.5.bin"); res.Outcome != emu.OK {
		t.Errorf("legacy-signed image to core 2.5: %v %q", res, res.Headers["x-otabox-reason"])
	}

	d31 := device(emu.ESP8266v31, "5C:CF:7F:00:72:04")
	d31.Running = good
	if res := d31.Update(r.addr, "/update"); res.Status != 304 || !strings.Contains(res.Headers["x-otabox-reason"], "meter 1.4.0") {
		t.Errorf("/update to core 3.1 running 1.4.0: %v %q", res, res.Headers["x-otabox-reason"])
	}
	d25 := device(emu.ESP8266v25, "5C:CF:7F:00:72:05")
	d25.Running = good
	if res := d25.Update(r.addr, "/update"); res.Outcome != emu.OK || !bytes.Equal(res.Image, legacy) {
		t.Errorf("/update to core 2.5 running 1.4.0: %v %q", res, res.Headers["x-otabox-reason"])
	}

	out, err := exec.Command(otabox, "inspect", "--key", site.pem, filepath.Join(dir, "meter-1.5.bin")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "legacy rsautl form") || !strings.Contains(string(out), "2.6.0 and later reject this form") {
		t.Errorf("inspect of the legacy-signed image: %v\n%s", err, out)
	}
}

// TestVerifyKeyServesOnlyVerifiedImages: with --verify-key, an unsigned
// image, one signed by another key and one whose signature block is
// corrupt stay out of the catalog, each with a warning that says why;
// images that verify (signing.py in both forms, Secure Boot v2) are served.
func TestVerifyKeyServesOnlyVerifiedImages(t *testing.T) {
	ok := mustSign(t)
	site, other, sb := newSiteKey(t, "rsa2048"), newSiteKey(t, "rsa2048"), newSiteKey(t, "rsa3072")
	e8266, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 24 << 10, Project: "meter", Version: "1.4.0", Seed: 41})
	e32, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP32, Size: 24 << 10, Project: "gate", Version: "3.0.1", Seed: 42})
	dir := t.TempDir()
	files := map[string][]byte{
		"good.bin":       ok(imagegen.SignESP8266(e8266, site.priv, false)),
		"legacy.bin":     ok(imagegen.SignESP8266(e8266, site.priv, true)),
		"foreign.bin":    ok(imagegen.SignESP8266(e8266, other.priv, false)),
		"unsigned.bin":   e8266,
		"secure.bin":     ok(imagegen.SignSecureBootV2(e32, sb.priv)),
		"badcrc.bin":     imagegen.CorruptBlockCRC(ok(imagegen.SignSecureBootV2(e32, sb.priv))),
		"unsigned32.bin": e32,
	}
	for name, b := range files {
		os.WriteFile(filepath.Join(dir, name), b, 0o644)
	}
	r := start(t, "--catalog", dir, "--verify-key", site.pem, "--verify-key", sb.pem)
	for file, why := range map[string]string{
		"unsigned.bin":   "signature: the image carries no signature",
		"unsigned32.bin": "signature: the image carries no signature",
		"foreign.bin":    "does not verify under rsa2048.pem",
		"badcrc.bin":     "CRC32 does not match",
	} {
		if line := waitLog(t, r, file); !strings.Contains(line, why) || !strings.Contains(line, "WARN") {
			t.Errorf("%s: log says %q, want a warning with %q", file, line, why)
		}
	}
	waitLog(t, r, "signatures: serving only images that verify under rsa2048.pem (RSA-2048), rsa3072.pem (RSA-3072)")
	list := emu.New(emu.ESP8266v31).Catalog(r.addr, ".")
	var names []string
	for _, e := range list.Firmwares {
		names = append(names, e.Name)
	}
	if got := strings.Join(names, " "); got != "good.bin legacy.bin" {
		t.Errorf("ESP8266 catalog lists %q, want the two verified images", got)
	}
	if res := emu.New(emu.ESP8266v31).Update(r.addr, "/foreign.bin"); res.Status != 404 {
		t.Errorf("an image signed by another key: %v", res)
	}
	d := emu.New(emu.ESP32v20)
	if res := d.Update(r.addr, "/secure.bin"); res.Outcome != emu.OK {
		t.Errorf("the verified Secure Boot v2 image: %v %q", res, res.Headers["x-otabox-reason"])
	}
}

// TestInspectKey: inspect --key says which key a signature verifies under,
// or why none does (and exits 1); a private key is refused as a key.
func TestInspectKey(t *testing.T) {
	ok := mustSign(t)
	site, other := newSiteKey(t, "rsa2048"), newSiteKey(t, "p256")
	base, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 16 << 10, Seed: 51})
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good.bin"), filepath.Join(dir, "bad.bin")
	os.WriteFile(good, ok(imagegen.SignESP8266(base, site.priv, false)), 0o644)
	os.WriteFile(bad, ok(imagegen.SignESP8266(base, other.priv, false)), 0o644)
	out, err := exec.Command(otabox, "inspect", "--key", site.pem, good).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "signature:      ok (key rsa2048.pem, RSA-2048 PKCS#1 v1.5 SHA-256)") || !strings.Contains(string(out), "signed:         ESP8266 signed update: 256-byte RSA-2048 signature") {
		t.Errorf("inspect --key on a good image: %v\n%s", err, out)
	}
	out, err = exec.Command(otabox, "inspect", bad, "--key", site.pem).CombinedOutput()
	if code := exitCode(err); code != 1 || !strings.Contains(string(out), "signature:      FAILED: the ") || !strings.Contains(string(out), "-byte signature does not verify under rsa2048.pem") {
		t.Errorf("inspect --key on an image signed by another key: exit %d\n%s", code, out)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(site.priv)
	priv := filepath.Join(dir, "private.key")
	os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	out, err = exec.Command(otabox, "inspect", "--key", priv, good).CombinedOutput()
	if code := exitCode(err); code != 2 || !strings.Contains(string(out), "is a private key; give otabox the public half") {
		t.Errorf("a private key as --key: exit %d\n%s", code, out)
	}
}

// TestAntiRollbackRefusesLowerSecureVersion: a device known to run an app
// with secure_version 2 is refused an image with secure_version 1 (403 and
// the reason), and /update never picks it even when its version is newer.
func TestAntiRollbackRefusesLowerSecureVersion(t *testing.T) {
	spec := func(version string, sv uint32, seed uint64) []byte {
		b, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP32, Size: 24 << 10, Project: "gate", Version: version, SecureVersion: sv, Seed: seed})
		return b
	}
	running, rollback := spec("2.0.0", 2, 61), spec("2.1.0", 1, 62)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "gate-2.0.0.bin"), running, 0o644)
	os.WriteFile(filepath.Join(dir, "gate-2.1.0.bin"), rollback, 0o644)
	r := start(t, "--catalog", dir)
	d := emu.New(emu.ESP32v20)
	d.Running = running
	res := d.Update(r.addr, "/gate-2.1.0.bin")
	if res.Status != 403 || res.Headers["x-otabox-reason"] != "anti-rollback: secure_version 1 < the device's 2" {
		t.Errorf("lower secure_version: %v %q", res, res.Headers["x-otabox-reason"])
	}
	if res := d.Update(r.addr, "/update"); res.Status != 304 || !strings.Contains(res.Headers["x-otabox-reason"], "the newest it can take") {
		t.Errorf("/update: %v %q", res, res.Headers["x-otabox-reason"])
	}
	fresh := emu.New(emu.ESP32v20) // runs an unknown app: nothing to compare with
	fresh.STAMAC = "24:0A:C4:00:00:61"
	if res := fresh.Update(r.addr, "/gate-2.1.0.bin"); res.Outcome != emu.OK {
		t.Errorf("device with an unknown running app: %v %q", res, res.Headers["x-otabox-reason"])
	}
}

// exitCode is the exit status of a finished command (0 when err is nil).
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestFilesystemImagesFillTheirArea: updateFS() sends the sketch's free
// space, not the filesystem area's, so a filesystem image is not compared
// with it: a LittleFS image the size of an ESP8266 4M2M filesystem area
// (2,072,576 bytes, with 1,695,744 bytes of sketch space free) and one of
// the ESP32 default spiffs partition (1,441,792 bytes) are taken whole by
// each core's request bytes, and so is a SPIFFS image known by its name.
// A file that is not a filesystem image, a firmware image asked for as a
// filesystem and the reverse are refused with the reason, and so is an
// image larger than any filesystem area of the device's chip.
func TestFilesystemImagesFillTheirArea(t *testing.T) {
	dir := t.TempDir()
	lfs8266, lfs32 := fsimage.Build(8192, 253), fsimage.Build(4096, 352)
	spiffs := bytes.Repeat([]byte{0xff, 0x01}, 256<<10)
	v2, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 64 << 10, Project: "meter", Version: "1.1.0", Seed: 2})
	for name, b := range map[string][]byte{"fs-8266.bin": lfs8266, "fs-32.bin": lfs32, "site.spiffs.bin": spiffs, "notes.txt": []byte("hello\n"), "meter.bin": v2} {
		os.WriteFile(filepath.Join(dir, name), b, 0o644)
	}
	r := start(t, "--catalog", dir)
	esp8266 := func() *emu.Device {
		d := emu.New(emu.ESP8266v31)
		d.FreeSpace, d.FSArea = 1695744, 2072576
		return d
	}
	esp32 := func() *emu.Device {
		d := emu.New(emu.ESP32v20)
		d.FreeSpace, d.FSArea = 1310720, 1441792
		return d
	}
	for _, tc := range []struct {
		name   string
		d      *emu.Device
		target string
		want   []byte // nil: refused with reason
		reason string
	}{
		{"ESP8266, LittleFS filling 4M2M", esp8266(), "/fs-8266.bin", lfs8266, ""},
		{"ESP32, LittleFS filling the spiffs partition", esp32(), "/fs-32.bin", lfs32, ""},
		{"ESP8266, SPIFFS by its name", esp8266(), "/site.spiffs.bin", spiffs, ""},
		{"a text file as a filesystem", esp8266(), "/notes.txt", nil, "is not a filesystem image"},
		{"a firmware image as a filesystem", esp8266(), "/meter.bin", nil, "is a firmware image, the device asked for a spiffs image"},
		{"a filesystem image as a sketch", emu.New(emu.ESP8266v31), "/fs-8266.bin", nil, "is not a firmware image"},
		{"more than a 1 MB chip's filesystem", func() *emu.Device { d := esp8266(); d.ChipSize = 1 << 20; return d }(), "/fs-8266.bin", nil, "more than the largest filesystem area of a 1 MB chip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := tc.d.Update(r.addr, tc.target)
			if tc.want == nil {
				if res.Status != 403 || !strings.Contains(res.Headers["x-otabox-reason"], tc.reason) {
					t.Fatalf("%v %q", res, res.Headers["x-otabox-reason"])
				}
				return
			}
			if res.Outcome != emu.OK || !bytes.Equal(tc.d.FS, tc.want) || res.Headers["x-md5"] != md5hex(tc.want) {
				t.Fatalf("%v %q: %d bytes written", res, res.Headers["x-otabox-reason"], len(tc.d.FS))
			}
		})
	}
	if body := getBody(t, "http://"+r.addr+"/api/catalog"); !strings.Contains(body, `"filesystem": "littlefs"`) || !strings.Contains(body, `"filesystem": "spiffs"`) {
		t.Errorf("/api/catalog does not say which files are filesystem images:\n%s", body)
	}
}

// TestFilesystemImagesShownAsSuch: `otabox inspect` describes a LittleFS
// image by its superblock and a SPIFFS one by its name (size and
// digests, exit 0), `otabox list` gives their kind as the type, and the
// status page names them as filesystems.
func TestFilesystemImagesShownAsSuch(t *testing.T) {
	dir := t.TempDir()
	lfs := filepath.Join(dir, "meter.littlefs.bin")
	os.WriteFile(lfs, fsimage.Build(4096, 64), 0o644)
	os.WriteFile(filepath.Join(dir, "site.spiffs.bin"), make([]byte, 8192), 0o644)
	out, err := exec.Command(otabox, "inspect", lfs, filepath.Join(dir, "site.spiffs.bin")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "filesystem:     LittleFS 2.0, 64 blocks of 4096 bytes") || !strings.Contains(string(out), "filesystem:     SPIFFS (by its name)") {
		t.Errorf("inspect: %v\n%s", err, out)
	}
	out, err = exec.Command(otabox, "inspect", "--json", lfs).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"kind": "littlefs"`) || !strings.Contains(string(out), `"block_count": 64`) {
		t.Errorf("inspect --json: %v\n%s", err, out)
	}
	out, err = exec.Command(otabox, "list", "--catalog", dir).CombinedOutput()
	if err != nil || !regexp.MustCompile(`meter\.littlefs\.bin\s+meter\.littlefs\.bin\s+littlefs\s`).Match(out) || !regexp.MustCompile(`site\.spiffs\.bin\s+site\.spiffs\.bin\s+spiffs\s`).Match(out) {
		t.Errorf("list: %v\n%s", err, out)
	}
	r := start(t, "--catalog", dir)
	if page := getBody(t, "http://"+r.addr+"/"); !strings.Contains(page, "littlefs filesystem") || !strings.Contains(page, "spiffs filesystem") {
		t.Errorf("the status page does not name the filesystem images")
	}
}

// TestFilesystemUpdateGivesTheNewestOnce: /update in spiffs mode (the
// fixed update URL asked by updateFS() / updateSpiffs()) gives the newest
// filesystem image of the project of the sketch the device runs, named
// after it (meter-fs-1.1.littlefs.bin for project meter), and 304 once the
// fleet record says the device received that image whole. A cut-off
// filesystem download is not remembered: the device is sent it again. A
// filesystem download leaves the device's firmware state alone. An
// ESP32 is served its project's SPIFFS image the size of its default
// spiffs partition the same way; a device whose sketch is not in the
// catalog has no project and gets 304 with the reason.
func TestFilesystemUpdateGivesTheNewestOnce(t *testing.T) {
	dir, data := t.TempDir(), t.TempDir()
	meter, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 64 << 10, Project: "meter", Version: "1.0.0", Seed: 3})
	sensor, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP32, Size: 64 << 10, Project: "sensor", Version: "2.0.0", Seed: 4})
	fs10, fs11, other := fsimage.Build(8192, 253), fsimage.Build(8192, 253), fsimage.Build(8192, 253)
	fs11[len(fs11)-1], other[len(other)-2] = 0x11, 0x22
	spiffs := bytes.Repeat([]byte{0xff, 0x02}, 1441792/2)
	for name, b := range map[string][]byte{
		"meter-1.0.bin": meter, "meter-fs-1.0.littlefs.bin": fs10, "meter-fs-1.1.littlefs.bin": fs11, "metering-9.9.littlefs.bin": other,
		"sensor.bin": sensor, "sensor.spiffs.bin": spiffs,
	} {
		os.WriteFile(filepath.Join(dir, name), b, 0o644)
	}
	r := startData(t, data, "--catalog", dir)
	esp8266 := func(mac string) *emu.Device {
		d := emu.New(emu.ESP8266v31)
		d.Running, d.STAMAC, d.FreeSpace, d.FSArea = meter, mac, 1695744, 2072576
		return d
	}

	d := esp8266("5C:CF:7F:00:00:01")
	if res := d.Update(r.addr, "/update"); res.Outcome != emu.OK || !bytes.Equal(d.FS, fs11) {
		t.Fatalf("first updateFS: %v %q (%d bytes written)", res, res.Headers["x-otabox-reason"], len(d.FS))
	}
	d.FS = nil
	res := d.Update(r.addr, "/update")
	if res.Outcome != emu.NoUpdates || !strings.Contains(res.Headers["x-otabox-reason"], "received meter-fs-1.1.littlefs.bin whole") || d.FS != nil {
		t.Fatalf("second updateFS: %v %q", res, res.Headers["x-otabox-reason"])
	}
	sketch := emu.New(emu.ESP8266v31)
	sketch.Running, sketch.STAMAC = meter, d.STAMAC
	if res := sketch.Update(r.addr, "/update"); res.Outcome != emu.NoUpdates || !strings.Contains(res.Headers["x-otabox-reason"], "the newest it can take") {
		t.Fatalf("sketch update after the filesystem: %v %q", res, res.Headers["x-otabox-reason"])
	}

	cut := esp8266("5C:CF:7F:00:00:02")
	cut.CutAfter = 100 << 10
	if res := cut.Update(r.addr, "/update"); res.Outcome == emu.OK {
		t.Fatalf("cut-off updateFS succeeded: %v", res)
	}
	cut.FS = nil
	if res := cut.Update(r.addr, "/update"); res.Outcome != emu.OK || !bytes.Equal(cut.FS, fs11) {
		t.Fatalf("updateFS after a cut-off one: %v %q", res, res.Headers["x-otabox-reason"])
	}

	esp32 := emu.New(emu.ESP32v20)
	esp32.Running, esp32.FSArea = sensor, 1441792
	if res := esp32.Update(r.addr, "/update"); res.Outcome != emu.OK || !bytes.Equal(esp32.FS, spiffs) {
		t.Fatalf("ESP32 updateSpiffs: %v %q", res, res.Headers["x-otabox-reason"])
	}
	if res := esp32.Update(r.addr, "/update"); res.Outcome != emu.NoUpdates {
		t.Fatalf("ESP32 second updateSpiffs: %v %q", res, res.Headers["x-otabox-reason"])
	}

	stranger := esp8266("5C:CF:7F:00:00:03")
	stranger.Running = nil
	if res := stranger.Update(r.addr, "/update"); res.Outcome != emu.NoUpdates || !strings.Contains(res.Headers["x-otabox-reason"], "so its project is unknown") {
		t.Fatalf("unknown sketch: %v %q", res, res.Headers["x-otabox-reason"])
	}

	devs := recorded(t, data) // the ends above were committed with the decisions after them
	if got := devs[d.STAMAC]; got.Filesystem != "meter-fs-1.1.littlefs.bin" || got.State != "" || got.Sent != "" {
		t.Errorf("record of the device sent a filesystem image: %+v", got)
	}
	if got := devs[esp32.STAMAC]; got.Filesystem != "sensor.spiffs.bin" {
		t.Errorf("record of the ESP32: %+v", got)
	}
}

// TestTasmotaUpgradesThroughItsMinimalImage: a Tasmota ESP8266 whose
// free space cannot take tasmota.bin.gz asks for tasmota-minimal.bin.gz
// only after its updater failed with "Not Enough space"
// (HTTP_UE_TOO_LESS_SPACE), so with the minimal image beside it otabox
// answers the full one with its length and no body: the device's own
// check fails that way, it takes the minimal image, boots it, and the
// minimal firmware takes the full image, now with room (OtaMagic, as
// support_tasmota.ino drives ESPhttpUpdate). The .bin.gz files are
// served as they are, with x-MD5 of the compressed bytes, and listed as
// compressed images. Without a minimal image beside it the image that
// does not fit is refused with 403 and the reason, as for every device.
func TestTasmotaUpgradesThroughItsMinimalImage(t *testing.T) {
	build := func(size int, version string, seed uint64) []byte {
		b, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: size, FlashSize: 1 << 20, Project: "tasmota", Version: version, Seed: seed})
		return b
	}
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		zw.Write(b)
		zw.Close()
		return buf.Bytes()
	}
	old, full, minimal := build(600<<10, "12.5.0", 61), build(600<<10, "13.2.0", 62), build(300<<10, "13.2.0", 63)
	fullGz, minimalGz := gz(full), gz(minimal)
	dir := t.TempDir()
	for name, b := range map[string][]byte{"tasmota.bin.gz": fullGz, "tasmota-minimal.bin.gz": minimalGz, "sensors/tasmota-sensors.bin.gz": fullGz} {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755)
		os.WriteFile(filepath.Join(dir, name), b, 0o644)
	}
	data := t.TempDir()
	r := startData(t, data, "--catalog", dir)

	// A 1 MB layout's sketch area: the minimal image fits beside the old
	// one, the full one only beside the minimal one.
	area := int64(len(old)+4095)&^4095 + int64(len(minimalGz)+len(fullGz))/2
	d := emu.New(emu.ESP8266v31)
	d.Running, d.Version, d.ChipSize, d.STAMAC = old, "12.5.0(tasmota)", 1<<20, "5C:CF:7F:00:73:01"
	tas := &emu.Tasmota{Device: d, URL: "/tasmota.bin.gz", SketchArea: area}
	res := tas.Upgrade(r.addr)
	if res.Outcome != emu.OK || !bytes.Equal(d.Running, full) || !bytes.Equal(res.Image, fullGz) || res.Headers["x-md5"] != md5hex(fullGz) {
		t.Fatalf("Upgrade: %v %q after %q", res, res.Headers["x-otabox-reason"], tas.Asked)
	}
	if got := strings.Join(tas.Asked, " "); got != "/tasmota.bin.gz /tasmota-minimal.bin.gz /tasmota.bin.gz" {
		t.Errorf("Tasmota asked for %s", got)
	}
	waitLog(t, r, "so that its updater fails with")

	lone := emu.New(emu.ESP8266v31)
	lone.Running, lone.Version, lone.ChipSize, lone.STAMAC, lone.FreeSpace = old, "12.5.0(tasmota)", 1<<20, "5C:CF:7F:00:73:02", int64(len(fullGz)/2)&^4095
	if res := lone.Update(r.addr, "/sensors/tasmota-sensors.bin.gz"); res.Status != 403 || !strings.Contains(res.Headers["x-otabox-reason"], "needs") {
		t.Errorf("an image whose -minimal one is in another folder only: %v %q", res, res.Headers["x-otabox-reason"])
	}
	list := emu.New(emu.ESP8266v31).Catalog(r.addr, ".")
	if len(list.Firmwares) != 2 || list.Firmwares[1].Name != "tasmota.bin.gz" {
		t.Errorf("catalog lists %+v", list.Firmwares)
	}
	if out, err := exec.Command(otabox, "list", "--catalog", dir).CombinedOutput(); err != nil || !strings.Contains(string(out), "ESP8266 (gzip)") {
		t.Errorf("list: %v\n%s", err, out)
	}
}

// TestESPIDFOTA: ESP-IDF's esp_https_ota, as its source sends requests
// (esp_http_client's User-Agent and nothing about the device): a plain GET
// takes the whole image; with partial downloads, HEAD gives the length and
// no body, then 64 KB ranges (206, Content-Range) join to the image; a
// "bytes=0-0" probe is one byte; a download cut at 40 % resumes with
// "bytes=N-" and its bytes join to the image's MD5. An unsatisfiable or a
// multiple range is 416 with the reason; If-Range with another validator
// gets the whole image. The record holds one completed download per
// image taken, however many pieces it came in.
func TestESPIDFOTA(t *testing.T) {
	dir := t.TempDir()
	img, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP32, Size: 300 << 10, Project: "idf", Version: "5.3", Seed: 71})
	os.WriteFile(filepath.Join(dir, "idf.bin"), img, 0o644)
	data := t.TempDir()
	r := startData(t, data, "--catalog", dir)
	want := md5hex(img)

	plain := &emu.IDFOTA{}
	if res := plain.Update(r.addr, "/idf.bin"); res.Err != "" || emu.MD5(res.Image) != want {
		t.Fatalf("plain GET: %+v (%d bytes)", res.Err, len(res.Image))
	}
	if !strings.HasPrefix(plain.Requests[0], "GET /idf.bin HTTP/1.1\r\nUser-Agent: ESP32 HTTP Client/1.0\r\n") {
		t.Fatalf("request bytes: %q", plain.Requests[0])
	}

	partial := &emu.IDFOTA{PartialDownload: true}
	head, err := partial.Head(r.addr, "/idf.bin")
	if err != nil || head.StatusCode != 200 || head.ContentLength != int64(len(img)) || head.Header.Get("Accept-Ranges") != "bytes" || head.Header.Get("ETag") != `"`+want+`"` {
		t.Fatalf("HEAD: %v %+v", err, head)
	}
	if res := partial.Update(r.addr, "/idf.bin"); res.Err != "" || emu.MD5(res.Image) != want || res.Status != 206 {
		t.Fatalf("partial download: %+v (%d bytes)", res, len(res.Image))
	}
	if n := len(partial.Requests); n != 2+5 { // our HEAD, its own, then 300 KB in five 64 KB pieces
		t.Errorf("%d requests for 300 KB in 64 KB pieces", n)
	}

	probe, body, err := (&emu.IDFOTA{}).Get(r.addr, "/idf.bin", "bytes=0-0")
	if err != nil || probe.StatusCode != 206 || probe.Header.Get("Content-Range") != fmt.Sprintf("bytes 0-0/%d", len(img)) || len(body) != 1 || body[0] != img[0] {
		t.Fatalf("bytes=0-0: %v %+v %d bytes", err, probe, len(body))
	}

	cut := &emu.IDFOTA{PartialDownload: true, MaxRequest: 1 << 20, CutAfter: int64(len(img)) * 4 / 10}
	if res := cut.Update(r.addr, "/idf.bin"); res.Err == "" || len(res.Image) != len(img)*4/10 {
		t.Fatalf("the cut at 40%%: %+v (%d bytes)", res.Err, len(res.Image))
	}
	res := cut.Resume(r.addr, "/idf.bin")
	if res.Err != "" || emu.MD5(res.Image) != want {
		t.Fatalf("resumed: %+v (%d bytes)", res.Err, len(res.Image))
	}
	if last := cut.Requests[len(cut.Requests)-1]; !strings.Contains(last, fmt.Sprintf("Range: bytes=%d-\r\n", len(img)*4/10)) {
		t.Errorf("the resume asked %q", last)
	}

	for _, tc := range []struct{ rng, reason string }{
		{fmt.Sprintf("bytes=%d-", len(img)), "starts at or past the end"},
		{"bytes=0-1,5-6", "only one byte range per request"},
		{"items=0-1", "only bytes ranges"},
	} {
		resp, _, err := (&emu.IDFOTA{}).Get(r.addr, "/idf.bin", tc.rng)
		if err != nil || resp.StatusCode != 416 || !strings.Contains(resp.Header.Get("X-Otabox-Reason"), tc.reason) || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes */%d", len(img)) {
			t.Errorf("Range %q: %v %+v", tc.rng, err, resp)
		}
	}
	ifRange := func(v string) int {
		c, _ := net.Dial("tcp", r.addr)
		defer c.Close()
		fmt.Fprintf(c, "GET /idf.bin HTTP/1.1\r\nUser-Agent: ESP32 HTTP Client/1.0\r\nHost: %s\r\nRange: bytes=10-\r\nIf-Range: %s\r\nConnection: close\r\n\r\n", r.addr, v)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	if a, b := ifRange(`"`+want+`"`), ifRange(`"another"`); a != 206 || b != 200 {
		t.Errorf("If-Range: the image's own validator %d (want 206), another %d (want 200)", a, b)
	}

	// The record: a completed download per image taken whole (the plain
	// GET, the partial download, the resumed one, the If-Range 200), the
	// pieces not.
	// A download's end is committed with a linger (100 ms) after its last
	// byte: poll the record rather than guess how long a loaded machine takes.
	count := func() (completed, pieces int) {
		var evs []struct {
			Decision  string `json:"decision"`
			Status    int    `json:"status"`
			Completed bool   `json:"completed"`
			Size      int64  `json:"size"`
			Method    string `json:"method"`
		}
		if err := json.Unmarshal([]byte(getBody(t, "http://"+r.addr+"/api/events?limit=100")), &evs); err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if ev.Decision != "serve" || ev.Method != "GET" {
				continue
			}
			if ev.Size != int64(len(img)) {
				t.Errorf("an event of the image says size %d", ev.Size)
			}
			if ev.Completed {
				completed++
			} else if ev.Status == 206 {
				pieces++
			}
		}
		return completed, pieces
	}
	completed, pieces := count()
	for deadline := time.Now().Add(10 * time.Second); completed < 4 && time.Now().Before(deadline); completed, pieces = count() {
		time.Sleep(50 * time.Millisecond)
	}
	if completed != 4 {
		t.Errorf("%d completed downloads in the record, want 4 (and %d pieces)", completed, pieces)
	}
}

// esphomeParse is ESPHome's HttpRequestUpdate::update_task parsing a
// manifest (esphome/components/http_request/update/http_request_update.cpp):
// name, version and builds are required; every build needs chipFamily; the
// one for the device's variant needs ota.path and ota.md5; a path without
// "http" is taken from the manifest's host ("/...") or folder.
func esphomeParse(t *testing.T, sourceURL string, body []byte, variant string) (url, md5, version string, ok bool) {
	t.Helper()
	var root map[string]any
	if json.Unmarshal(body, &root) != nil {
		return "", "", "", false
	}
	name, okName := root["name"].(string)
	version, okVersion := root["version"].(string)
	builds, okBuilds := root["builds"].([]any)
	if !okName || !okVersion || !okBuilds || name == "" {
		return "", "", "", false
	}
	for _, b := range builds {
		build, _ := b.(map[string]any)
		family, isString := build["chipFamily"].(string)
		if !isString {
			return "", "", "", false
		}
		if family != variant {
			continue
		}
		ota, isObject := build["ota"].(map[string]any)
		path, okPath := ota["path"].(string)
		sum, okMD5 := ota["md5"].(string)
		if !isObject || !okPath || !okMD5 {
			return "", "", "", false
		}
		if !strings.Contains(path, "http") {
			if strings.HasPrefix(path, "/") {
				i := strings.Index(sourceURL[8:], "/")
				path = sourceURL[:8+i] + path
			} else {
				path = sourceURL[:strings.LastIndex(sourceURL, "/")+1] + path
			}
		}
		return path, sum, version, true
	}
	return "", "", "", false
}

// TestESP32FOTAManifest: esp32FOTA reads /esp32fota/NAME.json, parsed as
// its checkJSONManifest parses it (type, version as semver, host, port and
// bin, and littlefs, which it reads only beside host/port/bin), then
// downloads the filesystem image and the firmware with arduino-esp32's
// HTTPClient and no device headers. The manifest names the project's
// newest version; with builds for several chips at it (esp32FOTA has no
// chip field) it needs ?chip=, and without says so with a 404. A device
// already on the newest version is not updated; an ESP8266 image asked
// for with that client is refused.
func TestESP32FOTAManifest(t *testing.T) {
	build := func(chip espimage.Chip, version string, seed uint64) []byte {
		b, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP32, Chip: chip, Size: 96 << 10, Project: "gate", Version: version, Seed: seed})
		return b
	}
	old, v11, s3 := build(espimage.ChipESP32, "1.0.0", 81), build(espimage.ChipESP32, "1.1.0", 82), build(espimage.ChipESP32S3, "1.1.0", 83)
	lfs := fsimage.Build(4096, 352)
	e8266, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 32 << 10, Project: "gate", Version: "9.0.0", Seed: 84})
	dir := t.TempDir()
	for name, b := range map[string][]byte{"gate-1.0.bin": old, "gate-1.1.bin": v11, "s3/gate-1.1.bin": s3, "gate-fs-1.1.littlefs.bin": lfs, "gate-8266.bin": e8266} {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755)
		os.WriteFile(filepath.Join(dir, name), b, 0o644)
	}
	r := start(t, "--catalog", dir)
	device := func(chip espimage.Chip, version string) *emu.FOTA {
		d := emu.New(emu.ESP32v30)
		d.Chip, d.FSArea, d.Running = chip, 1441792, old
		return &emu.FOTA{Device: d, Name: "gate", Version: version}
	}

	both := device(espimage.ChipESP32, "1.0.0")
	if res := both.Run(r.addr, "/esp32fota/gate.json"); res.Updated || !strings.Contains(res.Error, "404") ||
		!strings.Contains(res.Manifest, "ESP32, ESP32-S3 at 1.1.0") || !strings.Contains(res.Manifest, "?chip=esp32") {
		t.Errorf("a project built for two chips, no ?chip=: %+v", res)
	}

	fota := device(espimage.ChipESP32, "1.0.0")
	res := fota.Run(r.addr, "/esp32fota/gate.json?chip=esp32")
	if !res.Updated || !bytes.Equal(fota.Device.Running, v11) || !bytes.Equal(fota.Device.FS, lfs) {
		t.Fatalf("esp32FOTA on an ESP32 at 1.0.0: %+v", res)
	}
	if !strings.HasPrefix(fota.Requests[0], "GET /esp32fota/gate.json?chip=esp32 HTTP/1.1\r\nHost: "+r.addr+"\r\nUser-Agent: ESP32HTTPClient\r\n") ||
		len(fota.Requests) != 3 || !strings.HasPrefix(fota.Requests[1], "GET /gate-fs-1.1.littlefs.bin ") || !strings.HasPrefix(fota.Requests[2], "GET /gate-1.1.bin ") {
		t.Errorf("requests: %q", fota.Requests)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(res.Manifest), &m); err != nil || m["type"] != "gate" || m["version"] != "1.1.0" || m["bin"] != "/gate-1.1.bin" || m["littlefs"] != "/gate-fs-1.1.littlefs.bin" {
		t.Errorf("manifest: %v %s", err, res.Manifest)
	}

	onS3 := device(espimage.ChipESP32S3, "1.0.0")
	if res := onS3.Run(r.addr, "/esp32fota/gate.json?chip=esp32s3"); !res.Updated || !bytes.Equal(onS3.Device.Running, s3) {
		t.Errorf("esp32FOTA on an ESP32-S3: %+v", res)
	}
	current := device(espimage.ChipESP32, "1.1.0")
	if res := current.Run(r.addr, "/esp32fota/gate.json?chip=esp32"); res.Updated || res.Error != "" || len(current.Requests) != 1 {
		t.Errorf("a device on the newest version: %+v %q", res, current.Requests)
	}
	raw := "GET /gate-8266.bin HTTP/1.1\r\nHost: " + r.addr + "\r\nUser-Agent: ESP32HTTPClient\r\nConnection: close\r\n\r\n"
	if status, reason := rawExchange(t, r.addr, raw); status != 403 || !strings.Contains(reason, "is an ESP8266 image, the device is an ESP32") {
		t.Errorf("an ESP8266 image to esp32FOTA: %d %q", status, reason)
	}
}

// TestESPHomeManifest: ESPHome's update platform http_request reads a
// project's manifest (/esphome/project/NAME.json) or one image's
// (/esphome/image/PATH.json), parsed here as its C++ parses it: the
// device's variant finds its build, and the image its path names,
// downloaded with ESPHome's User-Agent, has the manifest's MD5. A
// project's manifest names only its newest version, one build per chip.
func TestESPHomeManifest(t *testing.T) {
	dir := t.TempDir()
	build := func(name string, s imagegen.Spec) []byte {
		b, err := imagegen.Build(s)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, name), b, 0o644)
		return b
	}
	build("node-s3-1.0.bin", imagegen.Spec{Family: espimage.ESP32, Chip: espimage.ChipESP32S3, Size: 96 << 10, Project: "node", Version: "1.0.0", Seed: 91})
	s3 := build("node-s3-1.1.bin", imagegen.Spec{Family: espimage.ESP32, Chip: espimage.ChipESP32S3, Size: 96 << 10, Project: "node", Version: "1.1.0", Seed: 92})
	e8266 := build("node-8266-1.1.bin", imagegen.Spec{Family: espimage.ESP8266, Size: 64 << 10, Project: "node", Version: "1.1.0", Seed: 93})
	build("node-c3-1.0.bin", imagegen.Spec{Family: espimage.ESP32, Chip: espimage.ChipESP32C3, Size: 80 << 10, Project: "node", Version: "1.0.0", Seed: 94})
	build("plain.bin", imagegen.Spec{Family: espimage.ESP32, Size: 64 << 10, Seed: 95}) // no version
	r := start(t, "--catalog", dir)
	const ua = "ESPHome/2025.2.0 (https://esphome.io)"
	fetch := func(url string) (*http.Response, []byte) {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("User-Agent", ua)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	for _, tc := range []struct {
		manifest, variant string
		want              []byte
	}{
		{"/esphome/project/node.json", "ESP32-S3", s3},
		{"/esphome/project/node.json", "ESP8266", e8266},
		{"/esphome/image/node-s3-1.1.bin.json", "ESP32-S3", s3},
	} {
		source := "http://" + r.addr + tc.manifest
		resp, body := fetch(source)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("%s: %d %q", tc.manifest, resp.StatusCode, resp.Header.Get("X-Otabox-Reason"))
		}
		url, sum, version, ok := esphomeParse(t, source, body, tc.variant)
		if !ok || version != "1.1.0" || sum != md5hex(tc.want) {
			t.Fatalf("%s for %s: %q %q %q %v\n%s", tc.manifest, tc.variant, url, sum, version, ok, body)
		}
		img, got := fetch(url)
		if img.StatusCode != 200 || md5hex(got) != sum {
			t.Fatalf("%s: the image at %s: %d, md5 %s", tc.manifest, url, img.StatusCode, md5hex(got))
		}
	}
	// The project's C3 build is 1.0.0: not in the 1.1.0 release, so a C3
	// finds no build rather than an older one under a newer version.
	_, body := fetch("http://" + r.addr + "/esphome/project/node.json")
	if _, _, _, ok := esphomeParse(t, "http://"+r.addr+"/esphome/project/node.json", body, "ESP32-C3"); ok {
		t.Errorf("a C3 found a build in the 1.1.0 release:\n%s", body)
	}
	if resp, _ := fetch("http://" + r.addr + "/esphome/image/plain.bin.json"); resp.StatusCode != 404 || !strings.Contains(resp.Header.Get("X-Otabox-Reason"), "has no version") {
		t.Errorf("an image without a version: %d %q", resp.StatusCode, resp.Header.Get("X-Otabox-Reason"))
	}
	for _, bad := range []string{"/esphome/project/nothing.json", "/esphome/image/missing.bin.json", "/esphome/other/x.json"} {
		if resp, _ := fetch("http://" + r.addr + bad); resp.StatusCode != 404 || resp.Header.Get("X-Otabox-Reason") == "" {
			t.Errorf("%s: %d %q", bad, resp.StatusCode, resp.Header.Get("X-Otabox-Reason"))
		}
	}
}

// TestSignedImageRefusedForAnotherFlashMode: a signed-update ESP8266
// writes its chip's flash mode into byte 2 before it checks the signature,
// so an image signed with another mode in its header fails on it after the
// whole download. When otabox knows the device's mode (it runs a catalog
// image: its sketch MD5 is that image's running MD5 for the mode), such an
// image is refused before a byte, with the reason; a device of the image's
// own mode takes it and verifies it. Without a known mode it is served,
// and the device's own check refuses it (what otabox cannot tell).
func TestSignedImageRefusedForAnotherFlashMode(t *testing.T) {
	ok := mustSign(t)
	site := newSiteKey(t, "rsa2048")
	old, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 48 << 10, Project: "meter", Version: "1.0.0", Seed: 41})
	base, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 48 << 10, Project: "meter", Version: "2.0.0", FlashMode: 3, Seed: 42}) // DOUT
	dout := ok(imagegen.SignESP8266(base, site.priv, false))
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "meter-1.bin"), old, 0o644)
	os.WriteFile(filepath.Join(dir, "meter-2.bin"), dout, 0o644)
	r := start(t, "--catalog", dir)

	dio := emu.New(emu.ESP8266v31) // a DIO chip, running meter-1
	dio.STAMAC, dio.FlashMode, dio.Running, dio.SigningKey = "5C:CF:7F:00:71:01", 2, old, site.pub
	if res := dio.Update(r.addr, "/meter-2.bin"); res.Status != 403 || !strings.Contains(res.Headers["x-otabox-reason"], "signed with flash mode DOUT in its header and the device's chip runs DIO") {
		t.Fatalf("a DOUT-signed image to a DIO chip: %v %q", res, res.Headers["x-otabox-reason"])
	}
	doutChip := emu.New(emu.ESP8266v31)
	doutChip.STAMAC, doutChip.FlashMode, doutChip.Running, doutChip.SigningKey = "5C:CF:7F:00:71:02", 3, old, site.pub
	if res := doutChip.Update(r.addr, "/meter-2.bin"); res.Outcome != emu.OK {
		t.Fatalf("the DOUT-signed image to a DOUT chip: %v %q", res, res.Headers["x-otabox-reason"])
	}
	unknown := emu.New(emu.ESP8266v31) // runs nothing otabox knows: its mode is not known
	unknown.STAMAC, unknown.FlashMode, unknown.SigningKey = "5C:CF:7F:00:71:03", 2, site.pub
	if res := unknown.Update(r.addr, "/meter-2.bin"); res.Status != 200 || !strings.Contains(res.Error, "Signature verification failed") {
		t.Fatalf("mode unknown: %v", res)
	}
}

// rawExchange sends the request bytes raw and returns the answer's status
// and reason header.
func rawExchange(t *testing.T, addr, raw string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, raw)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Otabox-Reason")
}
