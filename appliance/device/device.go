// Package device reads what a request says about the device that sent it:
// which updater or HTTP client it is, its MAC, the digest of the image it
// runs, its free space, flash size and SDK. The ESP cores send these as
// x-ESP8266-* / x-ESP32-* headers (spec §1.3); which ones are present depends
// on the core version, so every field is optional.
package device

import (
	"fmt"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"

	"otabox/appliance/espimage"
)

// Client is the kind of HTTP client, from the User-Agent.
type Client uint8

const (
	Other   Client = iota
	Updater        // ESP8266-http-Update / ESP32-http-Update: the firmware GET
	// CatalogClient is the cores' HTTPClient (ESP8266HTTPClient /
	// ESP32HTTPClient): AutoConnect's catalog request, and on the ESP32
	// esp32FOTA's manifest and firmware GETs, which send no device headers.
	CatalogClient
	// IDFClient is ESP-IDF's esp_http_client ("ESP32 HTTP Client/1.0"),
	// as esp_https_ota uses it: a firmware GET (or HEAD, or a range of
	// it) with no device headers at all. ESP8266_RTOS_SDK's copy of the
	// client sends the same User-Agent, so it says nothing of the family.
	IDFClient
	// ESPHomeClient is ESPHome's http_request component ("ESPHome/<version>
	// (https://esphome.io)", its default useragent), reading its update
	// manifest and downloading the image the manifest names.
	ESPHomeClient
)

// IDFUserAgent is esp_http_client's default User-Agent.
const IDFUserAgent = "ESP32 HTTP Client/1.0"

// Downloads reports a client that may download firmware: the Arduino
// updaters, ESP-IDF's esp_https_ota, ESPHome, and arduino-esp32's
// HTTPClient (esp32FOTA).
func (f *Facts) Downloads() bool {
	return f.Client == Updater || f.Client == IDFClient || f.Client == ESPHomeClient || f.ESP32FOTA()
}

// ESP32FOTA is arduino-esp32's HTTPClient with its default
// User-Agent, as esp32FOTA downloads an image: its family is known, and
// nothing else.
func (f *Facts) ESP32FOTA() bool {
	return f.Client == CatalogClient && f.Family == espimage.ESP32
}

// Headerless reports a client whose request says nothing of its device
// (ESP-IDF's, ESPHome's): only the image kind can be checked.
func (f *Facts) Headerless() bool {
	return f.Client == IDFClient || f.Client == ESPHomeClient || f.ESP32FOTA()
}

// Facts is what one request tells about its device. Numeric fields are -1
// when the header is absent.
type Facts struct {
	Client Client
	Family espimage.Family // from the User-Agent; FamilyUnknown for other clients

	STAMAC, APMAC, BaseMAC string // upper-case "5C:CF:7F:12:34:56" as sent
	ChipID                 string // ESP8266 decimal chip id
	FreeSpace              int64  // x-*-free-space
	SketchSize             int64  // x-*-sketch-size
	ChipSize               int64  // x-*-chip-size
	SketchMD5              string // lower-case hex
	SketchSHA256           string // lower-case hex (ESP32 sends upper-case)
	SDKVersion             string
	Mode                   string // "sketch", "spiffs", "version", ...; "" when absent
	Version                string // x-*-version, only when the sketch passes one
}

// MAC returns the device's identity: the station MAC, else the base or AP
// MAC (Wi-Fi-less ESP32 parts send none of the Wi-Fi ones). "" when none.
func (f *Facts) MAC() string {
	for _, m := range []string{f.STAMAC, f.BaseMAC, f.APMAC} {
		if m != "" {
			return m
		}
	}
	return ""
}

// Digest is what the device reports it runs: its sketch MD5, else (ESP32
// cores before 2.0) its SHA-256; "" when it sent neither.
func (f *Facts) Digest() string {
	if f.SketchMD5 != "" {
		return f.SketchMD5
	}
	return f.SketchSHA256
}

// Reported is what the provisioning sketch (examples/provision) says
// about its chip in the version it passes to the updater, as
// "chip=ESP32-D0WD-V3 rev=3" among other words; "" for what it did not
// say. Values are cut to 32 bytes of [A-Za-z0-9._-].
func (f *Facts) Reported() (chip, revision string) {
	for _, w := range strings.Fields(f.Version) {
		k, v, ok := strings.Cut(w, "=")
		if !ok {
			continue
		}
		v = token(v)
		switch k {
		case "chip":
			chip = v
		case "rev":
			revision = v
		}
	}
	return chip, revision
}

func token(s string) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < 32; i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// AsksVersion reports getAvailableVersion() (ESP8266 core master after 3.1.2): the
// updater's request with mode "version", answered with headers only.
func (f *Facts) AsksVersion() bool { return strings.EqualFold(f.Mode, "version") }

// AsksFilesystem reports updateFS() / updateSpiffs(): mode "spiffs", for a
// LittleFS or a SPIFFS image alike.
func (f *Facts) AsksFilesystem() bool { return strings.EqualFold(f.Mode, "spiffs") }

// Flashing reports whether the request asks for a sketch (app) image rather
// than a filesystem image. An absent mode (old cores) means sketch.
func (f *Facts) Flashing() bool { return f.Mode == "" || strings.EqualFold(f.Mode, "sketch") }

// Parse reads the facts from h. An error names a header whose value a real
// core never sends (a size that is not a number, a MAC that is not a MAC):
// the caller refuses such a request rather than guess.
func Parse(h http.Header) (*Facts, error) {
	f := &Facts{FreeSpace: -1, SketchSize: -1, ChipSize: -1}
	ua := strings.TrimSpace(first(h["User-Agent"]))
	switch ua {
	case "ESP8266-http-Update":
		f.Client, f.Family = Updater, espimage.ESP8266
	case "ESP32-http-Update":
		f.Client, f.Family = Updater, espimage.ESP32
	case "ESP8266HTTPClient":
		f.Client, f.Family = CatalogClient, espimage.ESP8266
	case "ESP32HTTPClient":
		f.Client, f.Family = CatalogClient, espimage.ESP32
	case IDFUserAgent:
		f.Client = IDFClient
	default:
		if strings.HasPrefix(ua, "ESPHome/") {
			f.Client = ESPHomeClient
		}
	}
	if f.Family == espimage.FamilyUnknown {
		return f, nil // only the updaters send device headers
	}
	pre, keys := "x-"+f.Family.String()+"-", deviceHeaders[f.Family]
	get := func(name string) string { return strings.TrimSpace(first(h[keys[name]])) }
	var err error
	num := func(name string, dst *int64) {
		v := get(name)
		if v == "" || err != nil {
			return
		}
		n, e := strconv.ParseInt(v, 10, 64)
		if e != nil || n < 0 {
			err = fmt.Errorf("header %s%s: %q is not a byte count", pre, name, v)
			return
		}
		*dst = n
	}
	mac := func(name string, dst *string) {
		v := get(name)
		if v == "" || err != nil {
			return
		}
		if !isMAC(v) {
			err = fmt.Errorf("header %s%s: %q is not a MAC address", pre, name, v)
			return
		}
		*dst = strings.ToUpper(v)
	}
	digest := func(name string, n int, dst *string) {
		v := get(name)
		if v == "" || err != nil {
			return
		}
		if !isHex(v, n) {
			err = fmt.Errorf("header %s%s: %q is not %d hex digits", pre, name, v, n)
			return
		}
		*dst = strings.ToLower(v)
	}
	num("free-space", &f.FreeSpace)
	num("sketch-size", &f.SketchSize)
	num("chip-size", &f.ChipSize)
	mac("STA-MAC", &f.STAMAC)
	mac("AP-MAC", &f.APMAC)
	mac("BASE-MAC", &f.BaseMAC)
	digest("sketch-md5", 32, &f.SketchMD5)
	digest("sketch-sha256", 64, &f.SketchSHA256)
	f.ChipID = printable(get("Chip-ID"))
	f.SDKVersion = printable(get("sdk-version"))
	f.Mode = printable(get("mode"))
	f.Version = printable(get("version"))
	return f, err
}

// deviceHeaders are the canonical keys of the headers Parse reads, per
// family ("X-Esp8266-Free-Space"), made once: building and canonicalising
// a dozen names per request was a tenth of a catalog listing's CPU.
var deviceHeaders = func() map[espimage.Family]map[string]string {
	m := map[espimage.Family]map[string]string{}
	for _, f := range []espimage.Family{espimage.ESP8266, espimage.ESP32} {
		m[f] = map[string]string{}
		for _, name := range []string{"free-space", "sketch-size", "chip-size", "STA-MAC", "AP-MAC", "BASE-MAC",
			"sketch-md5", "sketch-sha256", "Chip-ID", "sdk-version", "mode", "version"} {
			m[f][name] = textproto.CanonicalMIMEHeaderKey("x-" + f.String() + "-" + name)
		}
	}
	return m
}()

// first is a header's first value, as http.Header.Get returns it.
func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func isMAC(s string) bool {
	if len(s) != 17 {
		return false
	}
	for i := 0; i < 17; i++ {
		if i%3 == 2 {
			if s[i] != ':' {
				return false
			}
		} else if !isHex(s[i:i+1], 1) {
			return false
		}
	}
	return true
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// printable keeps header text safe for logs and pages, and short.
func printable(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7E {
			return '?'
		}
		return r
	}, s)
}
