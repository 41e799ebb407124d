package emu

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"otabox/appliance/espimage"
)

// Outcome is HTTPUpdateResult.
type Outcome int

const (
	Failed    Outcome = iota // HTTP_UPDATE_FAILED
	NoUpdates                // HTTP_UPDATE_NO_UPDATES
	OK                       // HTTP_UPDATE_OK
)

func (o Outcome) String() string {
	return [...]string{"HTTP_UPDATE_FAILED", "HTTP_UPDATE_NO_UPDATES", "HTTP_UPDATE_OK"}[o]
}

// UpdateResult is what the device ends up with.
type UpdateResult struct {
	Outcome Outcome
	Error   string // getLastErrorString(), as AutoConnect shows it
	Status  int    // HTTP status, 0 if none was read
	Headers map[string]string
	Image   []byte // the bytes flashed (OK only)
	MD5     string // of Image
}

func (r UpdateResult) String() string {
	return fmt.Sprintf("%s status=%d error=%q", r.Outcome, r.Status, r.Error)
}

// PeekWait is how long an ESP32 waits after the header before it peeks,
// without blocking, for the image's first byte (HTTPUpdate: delay(100)).
const PeekWait = 100 * time.Millisecond

// Update runs ESPhttpUpdate / HTTPUpdate against addr for target, a
// request-target written verbatim (see FirmwareTarget). On OK the device
// now runs the new image.
func (d *Device) Update(addr, target string) UpdateResult {
	conn, err := d.dial(addr, d.timeout())
	if err != nil {
		return UpdateResult{Error: "HTTP error: connection failed"}
	}
	defer conn.Close()
	if tc, ok := conn.(*net.TCPConn); ok && d.CutAfter > 0 {
		tc.SetReadBuffer(5840) // lwIP's TCP_WND on the ESP8266
	}
	host := d.HostHeader
	if host == "" {
		host = addr
	}
	conn.SetDeadline(time.Now().Add(d.timeout()))
	if _, err := conn.Write(d.UpdateRequest(host, target)); err != nil {
		return UpdateResult{Error: "HTTP error: connection lost"}
	}
	r := bufio.NewReaderSize(conn, 1460) // one TCP segment, as lwIP hands it over
	resp, err := d.readHead(r)
	if err != nil {
		return UpdateResult{Error: "HTTP error: " + err.Error()}
	}
	res := UpdateResult{Status: resp.code, Headers: resp.headers}
	fail := func(msg string) UpdateResult { res.Outcome, res.Error = Failed, msg; return res }
	switch resp.code {
	case 200:
	case 304:
		res.Outcome = NoUpdates
		return res
	case 204:
		if d.Core.Version == "latest" && d.Core.Family == espimage.ESP32 {
			res.Outcome = NoUpdates
			return res
		}
		return fail("Wrong HTTP Code")
	case 403:
		return fail("Forbidden (403)")
	case 404:
		return fail("File Not Found (404)")
	case 401:
		if d.Core.Family == espimage.ESP8266 && d.Core.atLeast("3.0") {
			return fail("Unauthorized (401)")
		}
		return fail("Wrong HTTP Code")
	default:
		return fail("Wrong HTTP Code")
	}
	length := resp.length
	if length <= 0 {
		return fail("Server Did Not Report Size")
	}
	if d.FSArea > 0 {
		// handleUpdate for U_FS / U_SPIFFS: the area, not the free sketch
		// space, and no image header to check.
		if length > d.FSArea {
			return fail("Not Enough space")
		}
		return d.readFS(r, res, length)
	}
	if d.Core.Family == espimage.ESP32 && d.FreeSpace == 0 && d.Core.atLeast("2.0") {
		return fail("Partition Could Not be Found")
	}
	need := length
	if d.Core.Family == espimage.ESP8266 {
		need = (length + 4095) &^ 4095
	}
	if need > d.FreeSpace {
		return fail("Not Enough space")
	}
	xmd5, hasMD5 := resp.headers["x-md5"]
	if hasMD5 && xmd5 != "" && len(xmd5) != 32 {
		return fail("Wrong MD5")
	}
	if sha, ok := resp.headers["x-sha256"]; ok && d.Core.Version == "latest" && d.Core.Family == espimage.ESP32 && len(sha) != 64 {
		return fail("Wrong SHA256")
	}
	// The magic pre-check on the socket.
	if d.Core.Family == espimage.ESP32 {
		time.Sleep(PeekWait)
		if r.Buffered() == 0 { // WiFiClient::peek() does not block
			conn.SetReadDeadline(time.Now().Add(time.Millisecond))
			_, err := r.Peek(1)
			conn.SetReadDeadline(time.Now().Add(d.timeout()))
			if err != nil {
				return fail("Verify Bin Header Failed")
			}
		}
		if b, _ := r.Peek(1); b[0] != espimage.Magic {
			return fail("Verify Bin Header Failed")
		}
	} else {
		head, err := r.Peek(4)
		if err != nil {
			return fail("Verify Bin Header Failed")
		}
		gz := head[0] == 0x1F && d.Core.atLeast("2.7")
		if head[0] != espimage.Magic && !gz {
			return fail("Verify Bin Header Failed")
		}
		if head[0] == espimage.Magic && !d.FlashMap && magicFlashChipSize(head[3]>>4) > d.ChipSize {
			return fail("New Binary Does Not Fit Flash Size")
		}
	}
	body := make([]byte, length)
	if d.CutAfter > 0 && d.CutAfter < length {
		n, _ := io.ReadFull(r, body[:d.CutAfter])
		d.CutAfter = 0
		return fail(fmt.Sprintf("power lost after %d of %d bytes", n, length))
	}
	if n, err := io.ReadFull(r, body); err != nil {
		return fail(fmt.Sprintf("Update error: Stream Read Timeout (%d of %d bytes)", n, length))
	}
	sum := md5.Sum(body)
	res.MD5 = hex.EncodeToString(sum[:])
	if hasMD5 && xmd5 != "" && d.SigningKey == nil {
		caseSensitive := d.Core.Family == espimage.ESP32 && !d.Core.atLeast("3.0")
		if (caseSensitive && xmd5 != res.MD5) || !strings.EqualFold(xmd5, res.MD5) {
			return fail("Update error: MD5 Check Failed")
		}
	}
	if msg := d.verifyEnd(body); msg != "" {
		return fail(msg)
	}
	res.Outcome, res.Image = OK, body
	d.Running = body
	if body[0] == 0x1F { // eboot inflates it at the next boot
		if inner, err := inflate(body); err == nil {
			d.Running = inner
		}
	}
	return res
}

// readFS takes a filesystem image: the whole length, checked against
// x-MD5 as Updater::end() does, then written over the filesystem area.
func (d *Device) readFS(r *bufio.Reader, res UpdateResult, length int64) UpdateResult {
	body := make([]byte, length)
	if d.CutAfter > 0 && d.CutAfter < length {
		n, _ := io.ReadFull(r, body[:d.CutAfter])
		d.CutAfter = 0
		res.Outcome, res.Error = Failed, fmt.Sprintf("power lost after %d of %d bytes", n, length)
		return res
	}
	if n, err := io.ReadFull(r, body); err != nil {
		res.Outcome, res.Error = Failed, fmt.Sprintf("Update error: Stream Read Timeout (%d of %d bytes)", n, length)
		return res
	}
	sum := md5.Sum(body)
	res.MD5 = hex.EncodeToString(sum[:])
	if x := res.Headers["x-md5"]; x != "" && !strings.EqualFold(x, res.MD5) {
		res.Outcome, res.Error = Failed, "Update error: MD5 Check Failed"
		return res
	}
	res.Outcome, res.Image, d.FS = OK, body, body
	return res
}

func inflate(gz []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, err
	}
	zr.Multistream(false) // a signature may follow the stream
	return io.ReadAll(io.LimitReader(zr, espimage.MaxInflated))
}

// verifyEnd is Update.end(): ESP8266 re-reads the header; ESP32 runs
// esp_image_verify() when it sets the boot partition.
func (d *Device) verifyEnd(body []byte) string {
	if d.Core.Family == espimage.ESP8266 {
		if d.SigningKey != nil {
			// The signature is checked over what was flashed, whose byte 2
			// the Updater set to the chip's own flash mode.
			flashed := append([]byte(nil), body...)
			if len(flashed) > 2 && flashed[0] == espimage.Magic {
				flashed[2] = byte(d.FlashMode)
			}
			img, err := espimage.Parse(flashed)
			if err != nil {
				return "Update error: Signature verification failed"
			}
			how, err := espimage.Verify(flashed, img, []*espimage.Key{d.SigningKey})
			if err != nil || espimage.LegacySigned(how) == d.Core.atLeast("2.6") {
				// Each core checks one form: 2.5.x the legacy one, 2.6.0
				// and later the DigestInfo one (esp8266/Arduino #6250).
				return "Update error: Signature verification failed"
			}
		}
		if body[0] == espimage.Magic && !d.FlashMap && magicFlashChipSize(body[3]>>4) > d.ChipSize {
			return "Update error: New Flash config wrong"
		}
		return "" // ESP8266 checks no chip type: an ESP32 image is flashed anyway
	}
	img, err := espimage.Parse(body)
	if err != nil || img.Family != espimage.ESP32 || img.Chip != d.Chip {
		return "Update error: Could Not Activate The Firmware"
	}
	return ""
}

// magicFlashChipSize is Esp.cpp's table; the c1 layouts map to 0.
func magicFlashChipSize(n byte) int64 {
	switch n {
	case 0:
		return 512 << 10
	case 1:
		return 256 << 10
	case 2:
		return 1 << 20
	case 3:
		return 2 << 20
	case 4:
		return 4 << 20
	case 8:
		return 8 << 20
	case 9:
		return 16 << 20
	}
	return 0
}
