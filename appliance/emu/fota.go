package emu

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"otabox/appliance/espimage"
)

// FOTA is an ESP32 running esp32FOTA (chrisjoyce911/esp32FOTA 0.2.x,
// src/esp32FOTA.cpp, read for its requests and its manifest parsing):
// execHTTPcheck GETs the manifest with arduino-esp32's HTTPClient, and
// checkJSONManifest takes an object or an array of them; an entry counts
// when its "type" equals Name, its "version" (a number up to 65535, or a
// semver string) is greater than Version, and it names the image by "url"
// or by "host", "port" and "bin" (only that form also reads "littlefs",
// "spiffs" or "fatfs"). execOTA then GETs the filesystem image first, if
// any, and the firmware, with the same client: no device headers.
type FOTA struct {
	Device  *Device // its Chip, FreeSpace (the OTA partition) and FSArea
	Name    string  // the firmware type the sketch gives esp32FOTA
	Version string  // the sketch's own semver

	// Requests are the request heads sent, in order.
	Requests []string
}

// FOTAResult is how one check-and-update ended.
type FOTAResult struct {
	Updated  bool   // a newer entry was found and flashed
	Manifest string // the manifest's body
	Error    string
}

// Run is esp32FOTA.handle(): execHTTPcheck, then execOTA when it said so.
func (f *FOTA) Run(addr, manifestURL string) FOTAResult {
	status, _, body, err := f.get(addr, manifestURL)
	if err != nil {
		return FOTAResult{Error: err.Error()}
	}
	res := FOTAResult{Manifest: string(body)}
	if status != 200 && status != 301 {
		res.Error = fmt.Sprintf("Error on HTTP request (httpCode=%d)", status)
		return res
	}
	var doc any
	if err := json.Unmarshal(body, &doc); err != nil {
		res.Error = "JSON Parsing failed: " + err.Error()
		return res
	}
	entries, ok := doc.([]any)
	if !ok {
		entries = []any{doc}
	}
	for _, e := range entries {
		m, ok := e.(map[string]any)
		if !ok {
			continue
		}
		fw, fs, newer := f.check(addr, m)
		if !newer {
			continue
		}
		if fs != "" {
			img, err := f.fetch(addr, fs, f.Device.FSArea)
			if err != nil {
				res.Error = "filesystem: " + err.Error()
				return res
			}
			f.Device.FS = img
		}
		img, err := f.fetch(addr, fw, f.Device.FreeSpace)
		if err != nil {
			res.Error = "firmware: " + err.Error()
			return res
		}
		parsed, perr := espimage.Parse(img)
		if perr != nil || parsed.Family != espimage.ESP32 || parsed.Chip != f.Device.Chip {
			res.Error = "An Update Error Occurred: the image does not verify for this chip"
			return res
		}
		f.Device.Running = img
		res.Updated = true
		return res
	}
	return res
}

// check is checkJSONManifest: the firmware and filesystem request-targets
// on addr, and whether the entry is newer than the sketch.
func (f *FOTA) check(addr string, m map[string]any) (fw, fs string, newer bool) {
	if t, _ := m["type"].(string); t != f.Name {
		return "", "", false
	}
	var payload [3]int
	switch v := m["version"].(type) {
	case float64:
		if v == math.Trunc(v) && v >= 0 && v <= math.MaxUint16 {
			payload = [3]int{int(v), 0, 0}
		}
	case string:
		payload = semver(v)
	}
	str := func(k string) (string, bool) { s, ok := m[k].(string); return s, ok }
	url, hasURL := str("url")
	bin, hasBin := str("bin")
	host, hasHost := str("host")
	port, hasPort := m["port"].(float64)
	hasPort = hasPort && port == math.Trunc(port) && port >= 0 && port <= math.MaxUint16
	switch {
	case hasURL:
		fw = targetOn(addr, url)
	case hasBin && hasHost && hasPort:
		base := fmt.Sprintf("http://%s:%d", host, int(port))
		fw = targetOn(addr, base+bin)
		for _, k := range []string{"littlefs", "spiffs", "fatfs"} {
			if p, ok := str(k); ok {
				fs = targetOn(addr, base+p)
				break
			}
		}
	default:
		return "", "", false // "JSON manifest was missing one of the required keys"
	}
	if fw == "" {
		return "", "", false
	}
	own := semver(f.Version)
	for i := range payload {
		if payload[i] != own[i] {
			return fw, fs, payload[i] > own[i]
		}
	}
	return fw, fs, false
}

// targetOn is u's request-target when u names addr (the box the test
// started), "" otherwise: the emulator connects to nothing else.
func targetOn(addr, u string) string {
	rest, ok := strings.CutPrefix(u, "http://")
	if !ok {
		return ""
	}
	host, path, _ := strings.Cut(rest, "/")
	if host != addr {
		return ""
	}
	return "/" + path
}

// semver is semver_parse_version's major.minor.patch; anything it would
// not parse is 0.0.0, as SemverClass defaults.
func semver(v string) [3]int {
	v, _, _ = strings.Cut(v, "-")
	v, _, _ = strings.Cut(v, "+")
	parts := strings.Split(v, ".")
	var out [3]int
	if len(parts) == 0 || len(parts) > 3 {
		return [3]int{}
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return [3]int{}
		}
		out[i] = n
	}
	return out
}

// fetch is getHTTPStream and the Update that follows: the size must be
// known and fit the partition (Update.begin), and every byte arrive.
func (f *FOTA) fetch(addr, target string, room int64) ([]byte, error) {
	status, length, body, err := f.get(addr, target)
	switch {
	case err != nil:
		return nil, err
	case status != 200 && status != 301:
		return nil, fmt.Errorf("Server responded with HTTP Status '%d'", status)
	case length <= 0:
		return nil, fmt.Errorf("There was no content in the http response")
	case room > 0 && length > room:
		return nil, fmt.Errorf("Not enough space to begin OTA, partition size mismatch?")
	case int64(len(body)) != length:
		return nil, fmt.Errorf("Written only : %d/%d Premature end of stream?", len(body), length)
	}
	return body, nil
}

// get sends arduino-esp32 HTTPClient's GET (its header order: Host with
// the port, User-Agent, Connection, Accept-Encoding) and reads the answer.
func (f *FOTA) get(addr, target string) (status int, length int64, body []byte, err error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, 0, nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	head := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ESP32HTTPClient\r\nConnection: keep-alive\r\nAccept-Encoding: identity;q=1,chunked;q=0.1,*;q=0\r\n\r\n", target, addr)
	f.Requests = append(f.Requests, head)
	if _, err := io.WriteString(conn, head); err != nil {
		return 0, 0, nil, err
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, 0, nil, err
	}
	fields := strings.Fields(line)
	if len(fields) < 2 {
		return 0, 0, nil, fmt.Errorf("malformed status line %q", line)
	}
	status, _ = strconv.Atoi(fields[1])
	length = -1
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return status, 0, nil, err
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			break
		}
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, "Content-Length") {
			length, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	if length < 0 {
		return status, length, nil, nil
	}
	body = make([]byte, length)
	n, _ := io.ReadFull(r, body)
	return status, length, body[:n], nil
}
