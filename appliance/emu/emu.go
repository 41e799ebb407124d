// Package emu speaks to an update server exactly as an ESP8266 or ESP32
// running AutoConnectUpdate does: the same request bytes per core version
// (protocol spec §1), the same response parsing and the same checks, in
// the same order (§2), and the catalog parsed the way ArduinoJson 6 parses
// it with AutoConnect's 256-byte document (§3). A test that passes against
// emu is a test a real device would pass; every failure carries the text
// the device would show on its page.
package emu

import (
	"bufio"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"otabox/appliance/espimage"
)

// Core is a device's Arduino core release; it decides the request bytes
// and which answers the device accepts.
type Core struct {
	Family  espimage.Family
	Version string // "2.4", "2.7", "3.1" (ESP8266); "1.0", "2.0", "3.0", "latest" (ESP32)
}

// The cores the spec describes.
var (
	ESP8266v24  = Core{espimage.ESP8266, "2.4"}
	ESP8266v25  = Core{espimage.ESP8266, "2.5"} // signed updates, legacy signature form only; not in AllCores
	ESP8266v27  = Core{espimage.ESP8266, "2.7"}
	ESP8266v31  = Core{espimage.ESP8266, "3.1"}
	ESP32v10    = Core{espimage.ESP32, "1.0"}
	ESP32v20    = Core{espimage.ESP32, "2.0"}
	ESP32v30    = Core{espimage.ESP32, "3.0"}
	ESP32latest = Core{espimage.ESP32, "latest"}
	AllCores    = []Core{ESP8266v24, ESP8266v27, ESP8266v31, ESP32v10, ESP32v20, ESP32v30, ESP32latest}
)

func (c Core) String() string { return fmt.Sprintf("%s-core-%s", c.Family, c.Version) }

// atLeast compares the core's major.minor with v ("latest" is newest).
func (c Core) atLeast(v string) bool {
	if c.Version == "latest" {
		return true
	}
	return versionNum(c.Version) >= versionNum(v)
}

func versionNum(v string) int {
	maj, min, _ := strings.Cut(v, ".")
	a, _ := strconv.Atoi(maj)
	b, _ := strconv.Atoi(min)
	return a*100 + b
}

// Device is one emulated device: its core and what it reports about itself.
type Device struct {
	Core      Core
	Chip      espimage.Chip      // ESP32 family: what esp_image_verify expects
	FlashMode espimage.FlashMode // the chip's SPI mode (ESP8266 rewrites byte 2 to it)
	STAMAC    string
	APMAC     string
	FreeSpace int64
	ChipSize  int64
	// Running is the image the device runs: it sets sketch-size, sketch-md5
	// and sketch-sha256. Nil sends the digests of an unknown sketch.
	Running []byte
	NoWiFi  bool   // ESP32 parts without Wi-Fi send no STA/AP MAC
	Auth    string // "user:pass" for setAuthorization (ESP8266 ≥ 3.0; ESP32 ≥ 2.0.7, emulated from 2.0)
	// HostHeader is what the device puts in Host; "" uses the dialled address.
	HostHeader string
	// Source is the local address to connect from (a loopback address such
	// as 127.0.0.5 stands for one device of a fleet); nil lets the kernel pick.
	Source  net.IP
	Timeout time.Duration // the updater's stream timeout; 8 s by default
	// FlashMap says the running sketch was built with FLASH_MAP_SUPPORT
	// ("Mapping defined by Hardware and Sketch"): ESP8266HTTPUpdate then
	// skips its check that the new image's flash size fits the chip.
	FlashMap bool
	// SigningKey makes an ESP8266 a signed-update device (the sketch was
	// built with a public.key next to it): Update.end() then checks the
	// signature with it instead of x-MD5, and refuses an unsigned image.
	SigningKey *espimage.Key
	// Version is the currentVersion the sketch passes to the updater,
	// sent as x-ESP8266-version / x-ESP32-version; "" sends none.
	Version string
	// FSArea, when set, makes the request updateFS() (ESP8266) /
	// updateSpiffs() (ESP32): mode "spiffs", free-space still the
	// sketch's, and the image checked against this filesystem area (the
	// ESP8266's FS_end - FS_start, the ESP32's spiffs partition) instead.
	// FS is what a filesystem update wrote.
	FSArea int64
	FS     []byte
	// CutAfter makes the next download stop after this many body bytes,
	// as a board does when its power or Wi-Fi drops: it stops reading
	// and its connection goes away. Its socket then takes no more than an
	// ESP8266's TCP window, so the server cannot have sent it the rest.
	CutAfter int64
}

// New returns a device of the given core with plausible defaults: 4 MB of
// flash, 1 MB free, a fixed MAC, running an unknown sketch.
func New(core Core) *Device {
	d := &Device{Core: core, FlashMode: 2, STAMAC: "5C:CF:7F:12:34:56", APMAC: "5E:CF:7F:12:34:56", FreeSpace: 1 << 20, ChipSize: 4 << 20}
	if core.Family == espimage.ESP32 {
		d.STAMAC, d.APMAC = "24:0A:C4:12:34:56", "24:0A:C4:12:34:57"
		d.FreeSpace = 1310720
	}
	return d
}

// dial connects to addr from the device's Source address.
func (d *Device) dial(addr string, timeout time.Duration) (net.Conn, error) {
	dialer := net.Dialer{Timeout: timeout}
	if d.Source != nil {
		dialer.LocalAddr = &net.TCPAddr{IP: d.Source}
	}
	return dialer.Dial("tcp", addr)
}

func (d *Device) timeout() time.Duration {
	if d.Timeout > 0 {
		return d.Timeout
	}
	return 8 * time.Second
}

// sketch returns what the device reports about its running sketch.
func (d *Device) sketch() (size int, md5hex, sha256hex string) {
	if d.Running == nil {
		return 373940, "0123456789abcdef0123456789abcdef", ""
	}
	img, err := espimage.Parse(d.Running)
	if err != nil || img.Compressed {
		s := md5.Sum(d.Running)
		sha := ""
		if d.Core.Family == espimage.ESP32 {
			h := sha256.Sum256(d.Running)
			sha = strings.ToUpper(hex.EncodeToString(h[:]))
		}
		return len(d.Running), hex.EncodeToString(s[:]), sha
	}
	if img.Family == espimage.ESP8266 {
		return img.ImageLen, img.Digests.RunningMD5[d.FlashMode&3], ""
	}
	return img.ImageLen, img.Digests.RunningMD5[0], strings.ToUpper(img.Digests.RunningSHA256)
}

// CatalogRequest returns the bytes AutoConnect's catalog HTTPClient sends.
func (d *Device) CatalogRequest(host, uri string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "GET /_catalog?op=list&path=%s HTTP/1.1\r\n", uri)
	fmt.Fprintf(&b, "Host: %s\r\n", host)
	if d.Core.Family == espimage.ESP8266 {
		b.WriteString("User-Agent: ESP8266HTTPClient\r\n")
		conn := "Connection: keep-alive\r\n"
		if !d.Core.atLeast("2.6") {
			conn = "Connection: close\r\n" // _reuse defaulted to false before 2.6
		}
		if d.Core.atLeast("2.7") {
			b.WriteString("Accept-Encoding: identity;q=1,chunked;q=0.1,*;q=0\r\n" + conn + "Content-Length: 0\r\n")
		} else {
			b.WriteString(conn + "Accept-Encoding: identity;q=1,chunked;q=0.1,*;q=0\r\n")
		}
	} else {
		b.WriteString("User-Agent: ESP32HTTPClient\r\nConnection: keep-alive\r\nAccept-Encoding: identity;q=1,chunked;q=0.1,*;q=0\r\n")
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

// mode is what the updater sends as x-ESP8266-mode / x-ESP32-mode.
func (d *Device) mode() string {
	if d.FSArea > 0 {
		return "spiffs"
	}
	return "sketch"
}

// UpdateRequest returns the bytes HTTPUpdate sends for target, written
// verbatim into the request line as the cores do.
func (d *Device) UpdateRequest(host, target string) []byte {
	size, md5hex, shahex := d.sketch()
	var b strings.Builder
	h := func(k, v string) { fmt.Fprintf(&b, "%s: %s\r\n", k, v) }
	fmt.Fprintf(&b, "GET %s HTTP/1.0\r\n", target)
	h("Host", host)
	auth := ""
	if d.Auth != "" {
		auth = "Basic " + b64(d.Auth)
	}
	if d.Core.Family == espimage.ESP8266 {
		h("User-Agent", "ESP8266-http-Update")
		if auth != "" && d.Core.atLeast("3.0") {
			h("Authorization", auth)
		}
		h("Connection", "close")
		if d.Core.atLeast("2.6") {
			h("x-ESP8266-Chip-ID", "1193046")
		}
		h("x-ESP8266-STA-MAC", d.STAMAC)
		h("x-ESP8266-AP-MAC", d.APMAC)
		h("x-ESP8266-free-space", strconv.FormatInt(d.FreeSpace, 10))
		h("x-ESP8266-sketch-size", strconv.Itoa(size))
		h("x-ESP8266-sketch-md5", md5hex)
		h("x-ESP8266-chip-size", strconv.FormatInt(d.ChipSize, 10))
		h("x-ESP8266-sdk-version", "2.2.2-dev(38a443e)")
		h("x-ESP8266-mode", d.mode())
		if d.Version != "" {
			h("x-ESP8266-version", d.Version)
		}
		if d.Core.atLeast("2.6") {
			h("Content-Length", "0")
		}
	} else {
		h("User-Agent", "ESP32-http-Update")
		h("Connection", "close")
		if auth != "" && d.Core.atLeast("2.0") {
			h("Authorization", auth)
		}
		h("Cache-Control", "no-cache")
		if d.Core.Version == "latest" {
			h("x-ESP32-BASE-MAC", d.STAMAC)
		}
		if !d.NoWiFi {
			h("x-ESP32-STA-MAC", d.STAMAC)
			h("x-ESP32-AP-MAC", d.APMAC)
		}
		h("x-ESP32-free-space", strconv.FormatInt(d.FreeSpace, 10))
		h("x-ESP32-sketch-size", strconv.Itoa(size))
		if d.Core.atLeast("2.0") {
			h("x-ESP32-sketch-md5", md5hex)
		}
		if shahex != "" {
			h("x-ESP32-sketch-sha256", shahex)
		}
		h("x-ESP32-chip-size", strconv.FormatInt(d.ChipSize, 10))
		h("x-ESP32-sdk-version", "v4.4.7-dirty")
		h("x-ESP32-mode", d.mode())
		if d.Version != "" {
			h("x-ESP32-version", d.Version)
		}
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

// FirmwareTarget is the request-target AutoConnect builds from the
// catalog uri and a name (spec §1.2); legacy is AutoConnect ≤ 1.3.4.
func FirmwareTarget(uri, name string, legacy bool) string {
	if uri == "." && !legacy {
		return "/" + name
	}
	return uri + "/" + name
}

// response is a parsed status line and headers, as HTTPClient keeps them.
type response struct {
	code    int
	headers map[string]string // lower-case names
	length  int64
	chunked bool
}

// readHead parses the status line and headers the way
// HTTPClient::handleHeaderResponse does for the device's family.
func (d *Device) readHead(r *bufio.Reader) (*response, error) {
	resp := &response{headers: map[string]string{}, length: -1}
	first := true
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			if isTimeout(err) {
				return nil, fmt.Errorf("read Timeout")
			}
			return nil, fmt.Errorf("connection lost")
		}
		line = strings.TrimSpace(line)
		if first {
			first = false
			if d.Core.Family == espimage.ESP8266 && !strings.HasPrefix(line, "HTTP/1.") {
				return nil, fmt.Errorf("no HTTP server")
			}
			_, rest, _ := strings.Cut(line, " ")
			code, _, _ := strings.Cut(rest, " ")
			resp.code, _ = strconv.Atoi(code)
			continue
		}
		if line == "" {
			return resp, nil
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		k, v = strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
		switch k {
		case "content-length":
			resp.length = atol(v)
		case "transfer-encoding":
			if !strings.EqualFold(v, "chunked") && !(d.Core.Family == espimage.ESP32 && strings.EqualFold(v, "identity")) {
				return nil, fmt.Errorf("Transfer-Encoding not supported")
			}
			resp.chunked = strings.EqualFold(v, "chunked")
		}
		if old, dup := resp.headers[k]; dup && d.Core.Family == espimage.ESP8266 && d.Core.atLeast("3.0") {
			v = old + "," + v // ESP8266 3.x joins repeated collected headers
		}
		resp.headers[k] = v
	}
}

// atol is Arduino String::toInt: leading digits, 0 when none.
func atol(s string) int64 {
	var n int64
	neg := false
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "-") {
		neg, s = true, s[1:]
	}
	for i := 0; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		n = n*10 + int64(s[i]-'0')
	}
	if neg {
		return -n
	}
	return n
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
