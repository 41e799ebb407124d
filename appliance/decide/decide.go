// Package decide is the one place that says whether a device gets an image:
// serve it, answer "no update" (304), or refuse with a status and a
// one-line reason. It does no I/O; a reader who wants to know why a device
// got what it got reads this file.
package decide

import (
	"fmt"
	"net/http"
	"path"
	"strings"
	"time"

	"otabox/appliance/catalog"
	"otabox/appliance/device"
	"otabox/appliance/espimage"
	"otabox/appliance/policy"
)

// Action is what the server does with a firmware request.
type Action uint8

const (
	Serve       Action = iota // 200 with the image
	NotModified               // 304: the device reports "no update"
	Refuse                    // 4xx with a reason
	Version                   // 200, no body: x-version and x-MD5 of Entry (getAvailableVersion)
	// TooLarge is 200 with Entry's length and digests and no body, for an
	// ESP8266 image larger than the device's free space when a Tasmota
	// -minimal image beside it fits: the updater's own check then fails
	// with HTTP_UE_TOO_LESS_SPACE, the one error on which Tasmota asks for
	// the -minimal image next (a 403 would leave it asking for the full
	// one for ever). Recorded as a refusal; no body byte is sent.
	TooLarge
)

// Verdict is a decision with its HTTP status and the one-line reason that
// goes into the response and the log.
type Verdict struct {
	Action Action
	Status int
	Reason string
	Entry  *catalog.Entry // the image served or considered
	Gzip   bool           // serve Entry.Gzip, the compressed form
	// Batch is the factory batch the decision was made for ("" for none).
	Batch string
	// RetryAfter, in seconds, goes with a 503: the answer will change soon.
	RetryAfter int
}

// Request is everything a decision may look at.
type Request struct {
	Entry  *catalog.Entry
	Device *device.Facts
	// Running are the catalog images whose digests match what the device
	// reports it runs (catalog.Running).
	Running []*catalog.Entry
	// Chip is the device's chip when known from an earlier visit.
	Chip      espimage.Chip
	ChipKnown bool
	// Inflates says the device's running app is known to inflate gzip
	// images (ESP8266 core 2.7+); unknown means no.
	Inflates bool
	// Policy is the site's rules; nil allows everything.
	Policy *policy.Policy
	// Hold is an image held back from this device after failed updates.
	Hold Hold
	// Batch is the open factory batch that covers the device, if any:
	// /update gives it the batch's image.
	Batch *Batch
	// Now is the time of the request.
	Now time.Time
	// Pending reports a catalog file that is there but not read yet
	// (catalog.Pending); nil for none. A rule naming one waits for it.
	Pending func(path string) bool
	// File looks a path up in the catalog being served (nil: none).
	File func(path string) (*catalog.Entry, bool)
	// Filesystem is the SHA-256 of the filesystem image the fleet record
	// says the device last received whole ("" for none): devices report
	// no digest of their filesystem.
	Filesystem string
}

// Record is what the fleet record knows of one device for a decision.
type Record struct {
	Hold       Hold
	Filesystem string // SHA-256 of the filesystem image it last received whole
}

// pending is the answer while the image a rule names is still being read:
// 503 with Retry-After, never a fallback to another image.
func (r Request) pending(image, rule string) (Verdict, bool) {
	if r.Pending == nil || !r.Pending(image) {
		return Verdict{}, false
	}
	return Verdict{Action: Refuse, Status: http.StatusServiceUnavailable, RetryAfter: 5,
		Reason: fmt.Sprintf("%s %s, which is still being read and hashed; retry shortly", rule, image)}, true
}

// Batch is an open factory batch: every device it covers is given Image
// by /update, whatever it runs now.
type Batch struct {
	Name  string
	Image string // catalog path
}

// Hold is an image held back from one device: it was sent whole Failures
// times and the device came back still running its old image, so it is
// not offered again until Until (the fleet record's back-off). Digests
// are that image's running digests: a different image is not held.
type Hold struct {
	Digests  []string
	Until    time.Time
	Failures int
}

// holds reports whether h holds e back at now.
func (h Hold) holds(e *catalog.Entry, now time.Time) bool {
	if e == nil || e.Image == nil || !now.Before(h.Until) {
		return false
	}
	for _, d := range h.Digests {
		if strings.EqualFold(d, e.Image.Digests.RunningSHA256) {
			return true
		}
		for _, m := range e.Image.Digests.RunningMD5 {
			if strings.EqualFold(d, m) {
				return true
			}
		}
	}
	return false
}

func refuse(status int, e *catalog.Entry, format string, args ...any) Verdict {
	return Verdict{Action: Refuse, Status: status, Reason: fmt.Sprintf(format, args...), Entry: e}
}

// RunningChip returns the device's chip when it can be known: from the
// catalog images it runs (if they agree) or from an earlier visit.
func RunningChip(r Request) (espimage.Chip, bool) {
	var chip espimage.Chip
	n := 0
	for _, e := range r.Running {
		if n > 0 && e.Image.Chip != chip {
			n = -1
			break
		}
		chip, n = e.Image.Chip, 1
	}
	if n == 1 {
		return chip, true
	}
	return r.Chip, r.ChipKnown
}

// Firmware decides a GET for one named file.
func Firmware(r Request) Verdict {
	e, d := r.Entry, r.Device
	if !d.Downloads() {
		return refuse(http.StatusForbidden, e, "only the ESP8266/ESP32 HTTP updater, ESP-IDF's esp_https_ota, ESPHome or esp32FOTA may download firmware (User-Agent is not ESP8266-http-Update, ESP32-http-Update, "+device.IDFUserAgent+", ESPHome/... or ESP32HTTPClient)")
	}
	if ok, why := r.Policy.Allowed(d.MAC()); !ok {
		return refuse(http.StatusForbidden, e, "%s", why)
	}
	v := firmware(r)
	if v.Action == Serve {
		if r.Hold.holds(e, r.Now) {
			return Verdict{Action: NotModified, Status: http.StatusNotModified, Entry: e,
				Reason: fmt.Sprintf("held back after %d failed attempts; next try at %s", r.Hold.Failures, r.Hold.Until.Local().Format("2006-01-02 15:04"))}
		}
		if ok, why := r.Policy.InRollout(e.Path, d.MAC()); !ok {
			return Verdict{Action: NotModified, Status: http.StatusNotModified, Reason: why, Entry: e}
		}
	}
	return v
}

// firmware is Firmware without the policy.
func firmware(r Request) Verdict {
	e, d := r.Entry, r.Device
	if d.AsksVersion() {
		return version(e) // headers only, whatever the file: never a download
	}
	if e.Type != catalog.Bin {
		if d.ESP32FOTA() && e.FS != nil {
			// esp32FOTA's littlefs / spiffs URL: the same headerless
			// GET; the device checks the length against its partition.
			return Verdict{Action: Serve, Status: http.StatusOK, Entry: e, Reason: "a filesystem image for esp32FOTA, which sends nothing about its device"}
		}
		switch {
		case d.Flashing():
			return refuse(http.StatusForbidden, e, "%s is not a firmware image", e.Path)
		case !d.AsksFilesystem():
			return refuse(http.StatusForbidden, e, "%s: the device asked for a %s image, which otabox does not know", e.Path, d.Mode)
		case e.FS == nil:
			return refuse(http.StatusForbidden, e, "%s is not a filesystem image (LittleFS, or SPIFFS named *.spiffs.bin)", e.Path)
		}
		return filesystemFits(e, d)
	}
	img := e.Image
	if d.Headerless() {
		// esp_https_ota, ESPHome and esp32FOTA send no device headers:
		// chip, free space and running image are not known here (the
		// family only from esp32FOTA's User-Agent). The device checks the
		// image header's chip id before it writes, and the whole image
		// (ESPHome: the manifest's MD5) at the end.
		if d.Family != espimage.FamilyUnknown && img.Family != d.Family {
			return refuse(http.StatusForbidden, e, "%s is an %s image, the device is an %s", e.Path, img.Chip, d.Family)
		}
		return Verdict{Action: Serve, Status: http.StatusOK, Entry: e,
			Reason: "the client sends nothing about its device; the device checks the image itself"}
	}
	if !d.Flashing() {
		return refuse(http.StatusForbidden, e, "%s is a firmware image, the device asked for a %s image", e.Path, d.Mode)
	}
	if runs(r.Running, e) {
		return Verdict{Action: NotModified, Status: http.StatusNotModified, Reason: "device already runs " + e.Path, Entry: e}
	}
	if img.Family != d.Family {
		return refuse(http.StatusForbidden, e, "%s is an %s image, the device is an %s", e.Path, img.Chip, d.Family)
	}
	if chip, ok := RunningChip(r); ok && img.Family == espimage.ESP32 && chip != img.Chip {
		return refuse(http.StatusForbidden, e, "%s is built for %s, the device is an %s", e.Path, img.Chip, chip)
	}
	if sv, ok := secureVersion(r.Running); ok && img.Desc != nil && img.Desc.SecureVersion < sv {
		// ESP-IDF anti-rollback: the device's eFuse counter is at least its
		// running app's secure_version, and the bootloader refuses anything
		// lower, after the whole download.
		return refuse(http.StatusForbidden, e, "anti-rollback: secure_version %d < the device's %d", img.Desc.SecureVersion, sv)
	}
	if img.Compressed && d.ChipID == "" {
		// x-ESP8266-Chip-ID arrived with core 2.6.0; gzip support with 2.7.0.
		// Without it the running app surely cannot inflate (spec §2.4).
		return refuse(http.StatusForbidden, e, "%s is gzip-compressed, the device's core is older than 2.6 and cannot inflate it", e.Path)
	}
	if sig := img.Signature; img.Family == espimage.ESP8266 && sig != nil && sig.Scheme == espimage.SchemeESP8266 {
		// The Updater writes the chip's own flash mode into byte 2 before
		// it checks the signature over what it flashed: an image signed
		// with another mode in its header fails, after the whole download.
		if espimage.LegacySigned(e.Verified) && d.ChipID != "" {
			// x-ESP8266-Chip-ID arrived with core 2.6.0, which checks
			// only the openssl dgst form.
			return refuse(http.StatusForbidden, e, "%s is signed in the legacy rsautl form, which the device's core (2.6.0 or later: it sends x-ESP8266-Chip-ID) rejects after the download; sign it with signing.py without --legacy", e.Path)
		}
		if mode, ok := flashMode(r); ok && mode != img.FlashMode {
			return refuse(http.StatusForbidden, e, "%s is signed with flash mode %s in its header and the device's chip runs %s: its core writes %s there before it checks the signature, which would then fail", e.Path, img.FlashMode, mode, mode)
		}
	}
	if img.Family == espimage.ESP8266 && d.ChipSize >= 0 && img.FlashSize > d.ChipSize && !img.AutoFlash() {
		return refuse(http.StatusForbidden, e, "%s is built for %s of flash, the device has %s", e.Path, mib(img.FlashSize), mib(d.ChipSize))
	}
	if r.Inflates && e.Gzip != nil {
		if v := fitsSize(e, d, e.Gzip.Size); v.Action == Serve {
			v.Gzip = true
			return v
		}
	}
	v := fits(e, d)
	if v.Action == Refuse && img.Family == espimage.ESP8266 && e.Size > d.FreeSpace && r.File != nil {
		if m, ok := r.File(TasmotaMinimal(e.Path)); ok && m != e && m.Type == catalog.Bin && fits(m, d).Action == Serve {
			return Verdict{Action: TooLarge, Status: http.StatusOK, Entry: e,
				Reason: fmt.Sprintf("%s (%d bytes) is larger than the device's %d bytes free: answered with its length only, so that its updater fails with \"Not Enough space\" and Tasmota asks for %s, which fits", e.Path, e.Size, d.FreeSpace, m.Path)}
		}
	}
	return v
}

// TasmotaMinimal is the image Tasmota asks for after an update failed
// for lack of space (its OtaMagic, tasmota_support/support_tasmota.ino):
// the file name up to its last "-" (or its first "." when it has none),
// then "-minimal", then the name's type from its first "." on:
// tasmota.bin.gz and tasmota-DE.bin.gz give tasmota-minimal.bin.gz.
func TasmotaMinimal(p string) string {
	dir, name := path.Split(p)
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

// filesystemFits checks a filesystem image the way the device cannot
// tell otabox: its filesystem area is not in the request (free-space is
// the sketch's), and the device checks the image against that area
// itself. Only an image larger than any filesystem area the chip can
// have is refused: the chip size less 1 MB for the sketch and the
// bootloader (4M3M, 16M15M, ESP32 4 MB with OTA: 3 MB), or half a chip of
// 1 MB or less (1M512).
func filesystemFits(e *catalog.Entry, d *device.Facts) Verdict {
	if d.ChipSize > 0 {
		largest := d.ChipSize - 1<<20
		if d.ChipSize <= 1<<20 {
			largest = d.ChipSize / 2
		}
		if e.Size > largest {
			return refuse(http.StatusForbidden, e, "%s is a %d-byte filesystem image, more than the largest filesystem area of a %s chip (%d bytes)", e.Path, e.Size, mib(d.ChipSize), largest)
		}
	}
	return Verdict{Action: Serve, Status: http.StatusOK, Entry: e}
}

// flashMode is an ESP8266's flash mode when it runs a catalog image: the
// core rewrites byte 2 of what it flashes to the chip's mode, so its
// sketch MD5 is the image's running MD5 for that mode.
func flashMode(r Request) (espimage.FlashMode, bool) {
	for _, run := range r.Running {
		if run.Image == nil || run.Image.Family != espimage.ESP8266 {
			continue
		}
		for i, m := range run.Image.Digests.RunningMD5 {
			if strings.EqualFold(m, r.Device.SketchMD5) {
				return espimage.FlashMode(i), true
			}
		}
	}
	return 0, false
}

// version answers getAvailableVersion(): the image's version, or 404 when
// it has none to give.
func version(e *catalog.Entry) Verdict {
	if e.Image == nil || e.Image.Version == "" {
		return refuse(http.StatusNotFound, e, "%s has no known version (an ESP32 app descriptor, or the OTABOX: marker in an ESP8266 image)", e.Path)
	}
	return Verdict{Action: Version, Status: http.StatusOK, Reason: "version " + e.Image.Version, Entry: e}
}

// fits checks the image against the device's free OTA space, the way the
// device itself would after the download started.
func fits(e *catalog.Entry, d *device.Facts) Verdict { return fitsSize(e, d, e.Size) }

func fitsSize(e *catalog.Entry, d *device.Facts, size int64) Verdict {
	if d.FreeSpace >= 0 {
		need := size
		if d.Family == espimage.ESP8266 {
			need = (need + 4095) &^ 4095 // Update.begin rounds up to a flash sector
		}
		if need > d.FreeSpace {
			return refuse(http.StatusForbidden, e, "%s needs %d bytes, the device has %d free", e.Path, need, d.FreeSpace)
		}
	}
	return Verdict{Action: Serve, Status: http.StatusOK, Reason: "", Entry: e}
}

// Newest decides a GET of the fixed update URL (/update): the newest
// catalog image of the same family, chip and project as the image the
// device runs, among those it can take.
func Newest(r Request, all []*catalog.Entry) Verdict {
	d := r.Device
	if d.Client != device.Updater {
		return refuse(http.StatusForbidden, nil, "only the ESP8266/ESP32 HTTP updater may ask for updates (User-Agent is not ESP8266-http-Update or ESP32-http-Update)")
	}
	if ok, why := r.Policy.Allowed(d.MAC()); !ok {
		return refuse(http.StatusForbidden, nil, "%s", why)
	}
	if d.AsksVersion() {
		// What /update would serve this device: the image it would be
		// sent, else the one it runs (its own version, nothing newer).
		asSketch := *d
		asSketch.Mode = "sketch"
		req := r
		req.Device = &asSketch
		v := Newest(req, all)
		if v.Action == Serve {
			return version(v.Entry)
		}
		for _, e := range r.Running {
			if e.Image != nil && e.Image.Version != "" {
				return version(e) // nothing newer applies: its own
			}
		}
		return refuse(http.StatusNotFound, v.Entry, "no version to offer: %s", v.Reason)
	}
	if d.AsksFilesystem() {
		return newestFilesystem(r, all)
	}
	if !d.Flashing() {
		return Verdict{Action: NotModified, Status: http.StatusNotModified, Reason: "update URL serves sketches and filesystem images, device asked for " + d.Mode}
	}
	if b := r.Batch; b != nil {
		// A batch is the operator's word for this tray: it comes before
		// pins and projects. Firmware still refuses what the device
		// cannot take, and the policy's allow list and rollouts apply.
		for _, e := range all {
			if e.Path == b.Image {
				req := r
				req.Entry = e
				v := Firmware(req)
				v.Batch = b.Name
				return v
			}
		}
		if v, ok := r.pending(b.Image, "batch "+b.Name+" gives"); ok {
			v.Batch = b.Name
			return v
		}
		return Verdict{Action: NotModified, Status: http.StatusNotModified, Batch: b.Name,
			Reason: fmt.Sprintf("batch %s gives %s, which is not in the catalog", b.Name, b.Image)}
	}
	if pin, group := r.Policy.Pin(d.MAC()); pin != "" {
		// The group gets its pinned image, whatever it runs now; Firmware
		// answers 304 when it already runs it and refuses what it cannot take.
		for _, e := range all {
			if e.Path == pin {
				req := r
				req.Entry = e
				return Firmware(req)
			}
		}
		if v, ok := r.pending(pin, "group "+group+" is pinned to"); ok {
			return v
		}
		return Verdict{Action: NotModified, Status: http.StatusNotModified, Reason: fmt.Sprintf("group %s is pinned to %s, which is not in the catalog", group, pin)}
	}
	current, v := project(r)
	if current == nil {
		return v
	}
	chip, chipKnown := RunningChip(r)
	var best, held *catalog.Entry // held: the newest one the rollout holds back
	heldWhy := ""
	for _, e := range all {
		if e.Type != catalog.Bin || e.Image.Family != d.Family || e.Image.Project != current.Image.Project || r.Policy.PinnedElsewhere(e.Path, d.MAC()) {
			continue
		}
		if runs(r.Running, e) {
			continue // a copy of what it runs is no update
		}
		if ok, why := r.Policy.InRollout(e.Path, d.MAC()); !ok {
			if held == nil || newer(e, held) {
				held, heldWhy = e, why
			}
			continue
		}
		if chipKnown && e.Image.Chip != chip {
			continue
		}
		if v := firmware(Request{Entry: e, Device: d, Running: r.Running, Chip: chip, ChipKnown: chipKnown}); v.Action != Serve {
			continue // one this device cannot take
		}
		if best == nil || newer(e, best) {
			best = e
		}
	}
	if best == nil || !newer(best, current) {
		if held != nil && newer(held, current) {
			return Verdict{Action: NotModified, Status: http.StatusNotModified, Reason: heldWhy, Entry: held}
		}
		return Verdict{Action: NotModified, Status: http.StatusNotModified, Reason: fmt.Sprintf("device runs %s %s (%s), the newest it can take", current.Image.Project, current.Image.Version, current.Path), Entry: current}
	}
	req := r
	req.Entry = best
	return Firmware(req)
}

// project is the catalog image that names the device's project: the
// first image it runs that has one. Without it the answer is v, a 304
// saying why.
func project(r Request) (current *catalog.Entry, v Verdict) {
	for _, e := range r.Running {
		if e.Image.Project != "" {
			return e, Verdict{}
		}
	}
	digest := r.Device.Digest()
	if digest == "" {
		return nil, Verdict{Action: NotModified, Status: http.StatusNotModified, Reason: "device sent no sketch digest, so its project is unknown"}
	}
	return nil, Verdict{Action: NotModified, Status: http.StatusNotModified, Reason: "device runs an image that is not in the catalog (" + digest + "), so its project is unknown"}
}

// newestFilesystem decides /update in spiffs mode: the newest filesystem
// image of the project of the sketch the device runs (FilesystemOf), or
// 304 when the fleet record says it received that very image whole, or
// one newer that is still in the catalog. The device reports nothing of
// its filesystem, so without the record it gets the newest.
func newestFilesystem(r Request, all []*catalog.Entry) Verdict {
	current, v := project(r)
	if current == nil {
		return v
	}
	p := current.Image.Project
	var best, has *catalog.Entry
	var bestV, hasV string
	for _, e := range all {
		ver, ok := FilesystemOf(e, p)
		if !ok {
			continue
		}
		if r.Filesystem != "" && strings.EqualFold(e.SHA256, r.Filesystem) {
			has, hasV = e, ver
		}
		if v := firmware(Request{Entry: e, Device: r.Device}); v.Action != Serve {
			continue // one this device cannot take
		}
		if best == nil || newerFS(e, ver, best, bestV) {
			best, bestV = e, ver
		}
	}
	switch {
	case best == nil:
		return Verdict{Action: NotModified, Status: http.StatusNotModified, Reason: fmt.Sprintf("no filesystem image of project %s in the catalog (named %s.littlefs.bin, %s-<version>.spiffs.bin, ...)", p, p, p)}
	case has != nil && (has == best || !newerFS(best, bestV, has, hasV)):
		return Verdict{Action: NotModified, Status: http.StatusNotModified, Entry: has,
			Reason: fmt.Sprintf("the record says the device received %s whole, the newest filesystem image of project %s", has.Path, p)}
	}
	req := r
	req.Entry = best
	return Firmware(req)
}

// FilesystemOf reports whether e is a filesystem image of project p, by
// its name: p, then ".", "-" or "_", case aside (sensor.littlefs.bin,
// sensor-1.4.0.littlefs.bin, sensor_fs-2.spiffs.bin). Its version is
// the last "-" or "_" separated part of the rest that starts with a digit
// (or v and a digit): "1.4.0", "2"; "" for none.
func FilesystemOf(e *catalog.Entry, p string) (version string, ok bool) {
	name := path.Base(e.Path)
	if e.FS == nil || p == "" || len(name) <= len(p) || !strings.EqualFold(name[:len(p)], p) || !strings.ContainsRune(".-_", rune(name[len(p)])) {
		return "", false
	}
	rest := strings.ToLower(name[len(p)+1:])
	for _, suffix := range []string{".bin", ".img", ".littlefs", ".spiffs", ".fs"} {
		rest = strings.TrimSuffix(rest, suffix)
	}
	parts := strings.FieldsFunc(rest, func(r rune) bool { return r == '-' || r == '_' })
	for i := len(parts) - 1; i >= 0; i-- {
		v := strings.TrimPrefix(parts[i], "v")
		if v != "" && v[0] >= '0' && v[0] <= '9' {
			return v, true
		}
	}
	return "", true
}

// NewestFilesystem is the newest filesystem image of project p in files
// (FilesystemOf, newest by the version in its name, then its date); nil
// for none.
func NewestFilesystem(p string, files []*catalog.Entry) *catalog.Entry {
	var best *catalog.Entry
	var bestV string
	for _, e := range files {
		if ver, ok := FilesystemOf(e, p); ok && (best == nil || newerFS(e, ver, best, bestV)) {
			best, bestV = e, ver
		}
	}
	return best
}

// newerFS orders filesystem images as newer orders firmware: by the
// version in the name, then by the file's date, then by path.
func newerFS(a *catalog.Entry, av string, b *catalog.Entry, bv string) bool {
	if c := CompareVersions(av, bv); c != 0 {
		return c > 0
	}
	if sa, sb := stamp(a), stamp(b); sa != sb {
		return sa > sb
	}
	return a.Path > b.Path
}

// secureVersion is the anti-rollback counter of the app the device runs,
// when its image is known and carries an app descriptor.
func secureVersion(running []*catalog.Entry) (uint32, bool) {
	var sv uint32
	ok := false
	for _, e := range running {
		if e.Image != nil && e.Image.Desc != nil {
			sv, ok = max(sv, e.Image.Desc.SecureVersion), true
		}
	}
	return sv, ok
}

// runs reports whether e is among the images the device runs.
func runs(running []*catalog.Entry, e *catalog.Entry) bool {
	for _, run := range running {
		if run == e {
			return true
		}
	}
	return false
}

// newer orders images by version, then by build stamp, then by path so
// that the choice never depends on map or walk order.
func newer(a, b *catalog.Entry) bool {
	if c := CompareVersions(a.Image.Version, b.Image.Version); c != 0 {
		return c > 0
	}
	if sa, sb := stamp(a), stamp(b); sa != sb {
		return sa > sb
	}
	return a.Path > b.Path
}

// stamp makes MM/DD/YY HH:MM:SS sortable.
func stamp(e *catalog.Entry) string {
	d := e.Date
	if len(d) != 8 {
		return ""
	}
	return d[6:8] + d[0:2] + d[3:5] + e.Time
}

func mib(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MB", n>>20)
	}
	return fmt.Sprintf("%d KB", n>>10)
}
