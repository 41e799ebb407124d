package emu

import (
	"bufio"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// IDFOTA is ESP-IDF's esp_https_ota (IDF 5.x) as its source drives
// esp_http_client (components/esp_https_ota/src/esp_https_ota.c): with
// PartialDownload, HEAD for the length (it must be 200), then the image in
// pieces of at most MaxRequest bytes, "Range: bytes=0-(MaxRequest-1)",
// "bytes=N-(N+MaxRequest-1)" and "bytes=N-" for the last, each piece on a
// connection of its own; without it, one plain GET. Its requests carry no
// device headers: esp_http_client's User-Agent and Host, the Range, and
// Content-Length: 0, in the order its header list keeps them.
type IDFOTA struct {
	PartialDownload bool
	MaxRequest      int64 // default 64 KB (DEFAULT_REQUEST_SIZE)
	// CutAfter drops the connection after this many body bytes of the
	// next piece, as a field link does; Resume then goes on from there.
	CutAfter int64
	Timeout  time.Duration

	// Requests are the request heads sent, in order.
	Requests []string
	got      []byte
	length   int64
}

// IDFResult is how an esp_https_ota run ended.
type IDFResult struct {
	Image  []byte // what was written to the OTA partition
	Err    string // "" when the whole image arrived
	Status int    // the last status line's code
}

func (o *IDFOTA) request(addr, method, target, rng string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nUser-Agent: ESP32 HTTP Client/1.0\r\nHost: %s\r\nContent-Length: 0\r\n", method, target, addr)
	if rng != "" {
		fmt.Fprintf(&b, "Range: %s\r\n", rng)
	}
	b.WriteString("\r\n")
	o.Requests = append(o.Requests, b.String())
	return b.String()
}

// exchange sends one request on a connection of its own and reads the
// answer: its response and up to limit body bytes (all when limit < 0).
func (o *IDFOTA) exchange(addr, method, target, rng string, limit int64) (*http.Response, []byte, error) {
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(conn, o.request(addr, method, target, rng)); err != nil {
		return nil, nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		return nil, nil, err
	}
	var r io.Reader = resp.Body
	if limit >= 0 {
		r = io.LimitReader(resp.Body, limit)
	}
	body, err := io.ReadAll(r)
	return resp, body, err
}

// Head is the HEAD esp_https_ota_begin sends with partial downloads.
func (o *IDFOTA) Head(addr, target string) (*http.Response, error) {
	resp, _, err := o.exchange(addr, http.MethodHead, target, "", 0)
	return resp, err
}

// Get sends one GET with an optional Range and reads the whole answer.
func (o *IDFOTA) Get(addr, target, rng string) (*http.Response, []byte, error) {
	return o.exchange(addr, http.MethodGet, target, rng, -1)
}

// Update runs esp_https_ota: the whole image, or where CutAfter stops it.
func (o *IDFOTA) Update(addr, target string) IDFResult {
	o.got, o.length = nil, -1
	if !o.PartialDownload {
		resp, body, err := o.exchange(addr, http.MethodGet, target, "", o.cut())
		if err != nil {
			return IDFResult{Err: err.Error()}
		}
		o.got = body
		return o.done(resp.StatusCode, resp.ContentLength)
	}
	resp, err := o.Head(addr, target)
	if err != nil {
		return IDFResult{Err: err.Error()}
	}
	if resp.StatusCode != http.StatusOK {
		return IDFResult{Status: resp.StatusCode, Err: "Received incorrect http status " + strconv.Itoa(resp.StatusCode)}
	}
	o.length = resp.ContentLength
	return o.Resume(addr, target)
}

// Resume goes on with the pieces from the bytes already written.
func (o *IDFOTA) Resume(addr, target string) IDFResult {
	max := o.MaxRequest
	if max <= 0 {
		max = 64 << 10
	}
	status := 0
	for int64(len(o.got)) < o.length {
		from := int64(len(o.got))
		rng := fmt.Sprintf("bytes=%d-", from)
		if o.length-from > max {
			rng = fmt.Sprintf("bytes=%d-%d", from, from+max-1)
		}
		resp, body, err := o.exchange(addr, http.MethodGet, target, rng, o.cut())
		o.got = append(o.got, body...)
		if err != nil {
			return IDFResult{Image: o.got, Err: err.Error()}
		}
		status = resp.StatusCode
		if status != http.StatusPartialContent && status != http.StatusOK {
			return IDFResult{Image: o.got, Status: status, Err: "Client error (" + strconv.Itoa(status) + ")"}
		}
		if o.CutAfter < 0 { // the link dropped in that piece
			o.CutAfter = 0
			return IDFResult{Image: o.got, Status: status, Err: "Connection closed before complete data was received!"}
		}
	}
	return IDFResult{Image: o.got, Status: status}
}

// cut is the body limit for the next piece: CutAfter once (then marked
// spent), else all.
func (o *IDFOTA) cut() int64 {
	if o.CutAfter > 0 {
		n := o.CutAfter
		o.CutAfter = -1
		return n
	}
	return -1
}

func (o *IDFOTA) done(status int, length int64) IDFResult {
	if status != http.StatusOK {
		return IDFResult{Status: status, Err: "Client error (" + strconv.Itoa(status) + ")"}
	}
	if o.CutAfter < 0 || (length >= 0 && int64(len(o.got)) != length) {
		o.CutAfter = 0
		return IDFResult{Image: o.got, Status: status, Err: "Connection closed before complete data was received!"}
	}
	return IDFResult{Image: o.got, Status: status}
}

// MD5 is the lower-case hex MD5 of b.
func MD5(b []byte) string {
	s := md5.Sum(b)
	return hex.EncodeToString(s[:])
}
