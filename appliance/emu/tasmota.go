package emu

import (
	"path"
	"strings"
)

// Tasmota is a Tasmota ESP8266 device's Upgrade command as its source
// drives ESPhttpUpdate (tasmota_support/support_tasmota.ino, the OTA state
// machine, read for its requests, not copied): each attempt is
// ESPhttpUpdate.update(client, url, version) with the device's version and
// image name ("13.2.0(tasmota)") as x-ESP8266-version. When an attempt
// fails with HTTP_UE_TOO_LESS_SPACE ("Not Enough space") or
// HTTP_UE_BIN_FOR_WRONG_FLASH, the next asks for the -minimal image
// (OtaMagic: the name up to its last "-", or its first ".", then
// "-minimal" and the name's type); the minimal firmware, once booted,
// asks for the original URL again. Free sketch space follows what runs:
// the sketch area less the running image rounded up to a sector.
type Tasmota struct {
	Device *Device
	URL    string // OtaUrl's request-target, e.g. "/tasmota.bin.gz"
	// SketchArea is the flash before the filesystem (FS_start less the
	// flash base): ESP.getFreeSketchSpace() is it less the running image.
	SketchArea int64
	Attempts   int // OTA_ATTEMPTS; 5 when zero

	// Asked are the request-targets of each attempt, in order.
	Asked []string
	// Loader is RtcSettings.ota_loader: the next attempt asks for the
	// -minimal image.
	Loader bool
}

// Upgrade runs the Upgrade command until the device runs an image that is
// not the minimal one, or the attempts run out. It returns the last
// attempt's result.
func (t *Tasmota) Upgrade(addr string) UpdateResult {
	attempts := t.Attempts
	if attempts == 0 {
		attempts = 5
	}
	var res UpdateResult
	for i := 0; i < attempts; i++ {
		target := t.URL
		if t.Loader {
			target = minimalName(t.URL)
		}
		t.Device.FreeSpace = t.SketchArea - (int64(len(t.Device.Running))+4095)&^4095
		t.Asked = append(t.Asked, target)
		res = t.Device.Update(addr, target)
		switch {
		case res.Outcome == OK && t.Loader:
			// The minimal firmware boots, sees ota_loader and
			// propagates the upload: the original URL, now with room.
			t.Loader = false
		case res.Outcome == OK || res.Outcome == NoUpdates:
			return res
		case res.Error == "Not Enough space" || res.Error == "New Binary Does Not Fit Flash Size":
			t.Loader = true
		}
	}
	return res
}

// minimalName is Tasmota's -minimal file name for the URL's file. It is
// written again here, from Tasmota's source, on purpose: the emulator
// must not call decide.TasmotaMinimal, the code whose answers it checks.
func minimalName(u string) string {
	dir, name := path.Split(u)
	dot := strings.IndexByte(name, '.')
	if dot < 0 {
		dot = len(name)
	}
	cut := strings.LastIndexByte(name, '-')
	if cut < 0 {
		cut = dot
	}
	return dir + name[:cut] + "-minimal" + name[dot:]
}
