package device_test

import (
	"bufio"
	"net/http"
	"strings"
	"testing"

	"otabox/appliance/device"
	"otabox/appliance/emu"
	"otabox/appliance/espimage"
)

// headers parses raw request bytes the way net/http does.
func headers(t testing.TB, raw []byte) http.Header {
	req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(strings.Replace(string(raw), "GET x ", "GET /x ", 1))))
	if err != nil {
		t.Fatal(err)
	}
	return req.Header
}

func TestParseEveryCore(t *testing.T) {
	for _, core := range emu.AllCores {
		t.Run(core.String(), func(t *testing.T) {
			d := emu.New(core)
			f, err := device.Parse(headers(t, d.UpdateRequest("h", "/x")))
			if err != nil {
				t.Fatal(err)
			}
			if f.Client != device.Updater || f.Family != core.Family || f.MAC() != d.STAMAC || f.FreeSpace != d.FreeSpace || f.ChipSize != d.ChipSize || !f.Flashing() {
				t.Errorf("%+v", f)
			}
			hasMD5 := core != emu.ESP32v10
			if (f.SketchMD5 != "") != hasMD5 {
				t.Errorf("sketch md5 %q", f.SketchMD5)
			}
			c, err := device.Parse(headers(t, d.CatalogRequest("h", ".")))
			if err != nil || c.Client != device.CatalogClient || c.Family != core.Family || c.MAC() != "" {
				t.Errorf("catalog request: %+v %v", c, err)
			}
		})
	}
}

func TestParseOptionalAndMalformed(t *testing.T) {
	h := http.Header{}
	h.Set("User-Agent", "ESP32-http-Update")
	h.Set("x-ESP32-free-space", "1310720")
	f, err := device.Parse(h) // no MAC, no digests: a Wi-Fi-less part on an old core
	if err != nil || f.MAC() != "" || f.ChipSize != -1 || f.FreeSpace != 1310720 || f.Family != espimage.ESP32 {
		t.Fatalf("%+v %v", f, err)
	}
	for name, value := range map[string]string{
		"x-ESP32-free-space":    "-1",
		"x-ESP32-chip-size":     "4M",
		"x-ESP32-STA-MAC":       "24:0A:C4",
		"x-ESP32-sketch-md5":    "xyz",
		"x-ESP32-sketch-sha256": strings.Repeat("a", 63),
	} {
		bad := h.Clone()
		bad.Set(name, value)
		if _, err := device.Parse(bad); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %q gave %v", name, value, err)
		}
	}
	other := http.Header{"User-Agent": {"curl/8"}, "X-Esp8266-Free-Space": {"nonsense"}}
	if f, err := device.Parse(other); err != nil || f.Client != device.Other {
		t.Errorf("a browser's headers are not device headers: %+v %v", f, err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("ESP8266-http-Update", "1720320", "5C:CF:7F:12:34:56", "0123456789abcdef0123456789abcdef", "sketch")
	f.Add("ESP32-http-Update", "0", "", "", "spiffs")
	f.Fuzz(func(t *testing.T, ua, free, mac, md5, mode string) {
		h := http.Header{}
		h.Set("x-ESP32-version", "provision chip="+mode+" rev="+free)
		h.Set("User-Agent", ua)
		for _, fam := range []string{"ESP8266", "ESP32"} {
			h.Set("x-"+fam+"-free-space", free)
			h.Set("x-"+fam+"-STA-MAC", mac)
			h.Set("x-"+fam+"-sketch-md5", md5)
			h.Set("x-"+fam+"-mode", mode)
		}
		fa, err := device.Parse(h)
		if err != nil {
			return
		}
		if fa.SketchMD5 != "" && (len(fa.SketchMD5) != 32 || strings.ToLower(fa.SketchMD5) != fa.SketchMD5) {
			t.Fatalf("md5 %q", fa.SketchMD5)
		}
		for _, r := range fa.Mode + fa.SDKVersion + fa.Version {
			if r < 0x20 || r > 0x7E {
				t.Fatalf("unprintable %q", fa.Mode)
			}
		}
		chip, rev := fa.Reported()
		for _, v := range []string{chip, rev} {
			if len(v) > 32 || strings.Trim(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" {
				t.Fatalf("reported %q", v)
			}
		}
	})
}
