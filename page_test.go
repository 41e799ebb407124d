package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
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

const pagePassword = "bench-7-secret"

// pageToken reads the actions' token from the status page, as a browser
// that renders it has it.
func pageToken(t *testing.T, addr, password string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
	req.SetBasicAuth("tech", password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`name="token" value="([^"]+)"`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("the page (%d) offers no action token:\n%.2000s", resp.StatusCode, b)
	}
	return string(m[1])
}

// post sends one action as a form the page would; header may add or
// override headers ("" values are left out). It returns the status and
// the one line.
func post(t *testing.T, addr, path, password string, form url.Values, header map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+addr+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if password != "" {
		req.SetBasicAuth("tech", password)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	line := strings.TrimSpace(string(b))
	if resp.StatusCode >= 400 && resp.Header.Get("X-Otabox-Reason") == "" && resp.StatusCode != 401 {
		t.Errorf("%s %s: %d without X-Otabox-Reason", req.Method, req.URL.Path, resp.StatusCode)
	}
	return resp.StatusCode, line
}

// uploadForm is the page's upload form: the token first, then the file.
func uploadForm(t *testing.T, addr, password, token, name string, content []byte) *http.Request {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	if token != "" {
		mw.WriteField("token", token)
	}
	fw, _ := mw.CreateFormFile("file", name)
	fw.Write(content)
	mw.Close()
	req, _ := http.NewRequest("POST", "http://"+addr+"/admin/upload", &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.SetBasicAuth("tech", password)
	return req
}

// catalogLeftovers lists what is in dir besides the names given.
func catalogLeftovers(t *testing.T, dir string, want ...string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var extra []string
	for _, e := range ents {
		if !strings.Contains(" "+strings.Join(want, " ")+" ", " "+e.Name()+" ") {
			extra = append(extra, e.Name())
		}
	}
	return extra
}

// TestPageActionsNeedThePasswordAndTheToken: without --admin-password the
// actions are off (403, and the page says how to turn them on); with it,
// an action without the password is 401, without the page's token or
// from another site's page 403, and nothing is done.
func TestPageActionsNeedThePasswordAndTheToken(t *testing.T) {
	dir, _, _, _ := fleetCatalog(t)
	open := start(t, "--catalog", dir)
	if page := getBody(t, "http://"+open.addr+"/"); !strings.Contains(page, "Actions are off: start otabox with --admin-password-file") {
		t.Errorf("the page without a password does not say how to turn actions on")
	}
	if code, line := post(t, open.addr, "/admin/remove", "", url.Values{"path": {"cam.bin"}}, nil); code != 403 || !strings.Contains(line, "Actions are off") {
		t.Errorf("remove without --admin-password: %d %q", code, line)
	}

	r := start(t, "--catalog", dir, "--admin-password", pagePassword)
	token := pageToken(t, r.addr, pagePassword)
	for _, tc := range []struct {
		name     string
		password string
		form     url.Values
		header   map[string]string
		code     int
		says     string
	}{
		{"no password", "", url.Values{"path": {"cam.bin"}, "token": {token}}, nil, 401, "password required"},
		{"wrong password", "guess", url.Values{"path": {"cam.bin"}, "token": {token}}, nil, 401, "password required"},
		{"no token", pagePassword, url.Values{"path": {"cam.bin"}}, nil, 403, "token is missing or stale"},
		{"a forged token", pagePassword, url.Values{"path": {"cam.bin"}, "token": {"AAAA"}}, nil, 403, "token is missing or stale"},
		{"another site's page", pagePassword, url.Values{"path": {"cam.bin"}, "token": {token}}, map[string]string{"Origin": "http://evil.example"}, 403, "cross-origin request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, line := post(t, r.addr, "/admin/remove", tc.password, tc.form, tc.header)
			if code != tc.code || !strings.Contains(line, tc.says) {
				t.Errorf("%d %q; want %d %q", code, line, tc.code, tc.says)
			}
		})
	}
	if code, line := do(t, uploadForm(t, r.addr, pagePassword, "", "new.bin", []byte{0xE9})); code != 403 || !strings.Contains(line, "token") {
		t.Errorf("upload without the token: %d %q", code, line)
	}
	// The page's own fetch sends its forms as multipart (FormData): the
	// token is checked there too.
	for _, tok := range []string{"", "AAAA"} {
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		if tok != "" {
			mw.WriteField("token", tok)
		}
		mw.WriteField("path", "cam.bin")
		mw.Close()
		req, _ := http.NewRequest("POST", "http://"+r.addr+"/admin/remove", &body)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		req.SetBasicAuth("tech", pagePassword)
		if code, line := do(t, req); code != 403 || !strings.Contains(line, "token is missing or stale") {
			t.Errorf("a multipart remove with token %q: %d %q", tok, code, line)
		}
	}
	if extra := catalogLeftovers(t, dir, "cam.bin", "meter-1.0.0.bin", "meter-1.1.0.bin"); len(extra) > 0 {
		t.Errorf("refused actions left %v in the catalog folder", extra)
	}
	if _, err := os.Stat(filepath.Join(dir, "cam.bin")); err != nil {
		t.Errorf("a refused remove removed the file: %v", err)
	}
}

// TestPageActionsDoWhatTheCommandsDo: with the password and the token,
// the page opens a batch (a device asking /update then gets its image),
// refuses to remove the image an open batch gives, closes the batch,
// retries a device, removes an image (the file and the catalog entry go),
// and every action, done or refused, is in the log with who asked and in
// the fleet record's events (endpoint admin).
func TestPageActionsDoWhatTheCommandsDo(t *testing.T) {
	dir, v1, v2, _ := fleetCatalog(t)
	data := t.TempDir()
	r := startData(t, data, "--catalog", dir, "--admin-password", pagePassword)
	token := pageToken(t, r.addr, pagePassword)
	act := func(path string, form url.Values) (int, string) {
		form.Set("token", token)
		return post(t, r.addr, path, pagePassword, form, map[string]string{"Origin": "http://" + r.addr})
	}
	steps := []struct {
		name, path string
		form       url.Values
		code       int
		says       string
	}{
		{"batch start, image misspelt", "/admin/batch/start", url.Values{"name": {"tray-1"}, "image": {"meter-1.1.bin"}}, 404, `did you mean "meter-1.1.0.bin"?`},
		{"batch start, bad name", "/admin/batch/start", url.Values{"name": {"tray 1"}, "image": {"meter-1.1.0.bin"}}, 400, "batch name"},
		{"batch start", "/admin/batch/start", url.Values{"name": {"tray-1"}, "image": {"meter-1.1.0.bin"}}, 201, "batch tray-1 open"},
		{"batch start again", "/admin/batch/start", url.Values{"name": {"tray-1"}, "image": {"meter-1.1.0.bin"}}, 409, "a batch name is used once"},
		{"remove the batch's image", "/admin/remove", url.Values{"path": {"meter-1.1.0.bin"}}, 409, "batch tray-1 is open"},
	}
	run := func(steps []struct {
		name, path string
		form       url.Values
		code       int
		says       string
	}) {
		for _, s := range steps {
			code, line := act(s.path, s.form)
			if code != s.code || !strings.Contains(line, s.says) {
				t.Errorf("%s: %d %q; want %d %q", s.name, code, line, s.code, s.says)
			}
		}
	}
	run(steps)
	dev := emu.New(emu.ESP8266v31)
	dev.STAMAC, dev.Running = "5C:CF:7F:00:00:B1", v1
	if res := dev.Update(r.addr, "/update"); res.Outcome != emu.OK || !bytes.Equal(res.Image, v2) {
		t.Fatalf("a device in the batch opened from the page: %v", res)
	}
	run([]struct {
		name, path string
		form       url.Values
		code       int
		says       string
	}{
		{"batch close while a board is unproven", "/admin/batch/close", url.Values{"name": {"tray-1"}}, 409, "1 still waiting"},
		{"batch close --force", "/admin/batch/close", url.Values{"name": {"tray-1"}, "force": {"1"}}, 200, "batch tray-1 closed"},
		{"batch close again", "/admin/batch/close", url.Values{"name": {"tray-1"}, "force": {"1"}}, 409, "already closed"},
		{"batch close, unknown", "/admin/batch/close", url.Values{"name": {"tray-9"}}, 404, `no batch "tray-9"`},
		{"retry, unknown device", "/admin/retry", url.Values{"mac": {"5C:CF:7F:99:99:99"}}, 404, "not in the fleet record"},
		{"retry, not a MAC", "/admin/retry", url.Values{"mac": {"5C:CF"}}, 400, "is not a MAC"},
		{"retry", "/admin/retry", url.Values{"mac": {"5c-cf-7f-00-00-b1"}}, 200, "5C:CF:7F:00:00:B1"},
		{"remove, outside the catalog", "/admin/remove", url.Values{"path": {"../otabox.db"}}, 400, `".."`},
		{"remove, not there", "/admin/remove", url.Values{"path": {"nope.bin"}}, 404, "not in the catalog"},
		{"remove", "/admin/remove", url.Values{"path": {"meter-1.0.0.bin"}}, 200, "meter-1.0.0.bin is removed"},
	})
	if _, err := os.Stat(filepath.Join(dir, "meter-1.0.0.bin")); !os.IsNotExist(err) {
		t.Errorf("the removed file is still in the folder: %v", err)
	}
	if cat := getBody(t, "http://tech:"+pagePassword+"@"+r.addr+"/api/catalog"); strings.Contains(cat, "meter-1.0.0.bin") {
		t.Errorf("the removed image is still in the catalog")
	}
	var evs []struct {
		Client, Target, Decision, Reason string
		Status                           int
	}
	if err := json.Unmarshal([]byte(getBody(t, "http://tech:"+pagePassword+"@"+r.addr+"/api/events?endpoint=admin&limit=100")), &evs); err != nil {
		t.Fatal(err)
	}
	if len(evs) != 15 {
		t.Errorf("the fleet record has %d admin events, want 15 (every action, done or refused): %+v", len(evs), evs)
	}
	for _, e := range evs {
		if !strings.HasPrefix(e.Client, "tech@127.0.0.1") || e.Reason == "" || e.Status == 0 {
			t.Errorf("admin event without who, outcome or reason: %+v", e)
		}
	}
	if line := waitLog(t, r, "admin: remove"); !strings.Contains(line, "who=tech@127.0.0.1") {
		t.Errorf("the log line does not say who: %s", line)
	}
}

// TestUploadChecksAsTheCatalogDoes: an upload is checked as the catalog
// checks a file copied into its folder — a malformed image, a file that
// is no image, one over --max-upload, one unsigned under --verify-key,
// a name taken or one devices cannot fetch are refused with the reason
// and leave nothing in the folder; a good one is in the catalog when the
// answer comes and a device downloads it byte for byte.
func TestUploadChecksAsTheCatalogDoes(t *testing.T) {
	dir, _, _, _ := fleetCatalog(t)
	r := start(t, "--catalog", dir, "--admin-password", pagePassword, "--max-upload", "1")
	token := pageToken(t, r.addr, pagePassword)
	good, err := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 200 << 10, Project: "meter", Version: "2.0.0", Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	huge, _ := imagegen.Build(imagegen.Spec{Family: espimage.ESP32, Size: 1100 << 10, Project: "cam", Version: "2", Seed: 10})
	malformed := append([]byte{0xE9, 0x09, 0x02, 0x20}, bytes.Repeat([]byte{0xAB}, 4096)...)
	for _, tc := range []struct {
		name    string
		file    string
		content []byte
		code    int
		says    string
	}{
		{"malformed image", "bad.bin", malformed, 422, "bad.bin refused: malformed firmware image"},
		{"not an image", "notes.txt", []byte("hello"), 422, "not an ESP firmware image"},
		{"over --max-upload", "huge.bin", huge, 413, "larger than the 1048576-byte upload limit"},
		{"empty", "empty.bin", nil, 422, "is empty"},
		{"name taken", "cam.bin", good, 409, "cam.bin is already in the catalog folder"},
		{"name devices cannot fetch", "new fw.bin", good, 400, "rename the file"},
		{"reserved name", "update", good, 422, "device endpoint"},
		{"good", "meter-2.0.0.bin", good, 201, fmt.Sprintf("meter-2.0.0.bin (ESP8266 image 2.0.0, %d bytes) is in the catalog; devices can fetch it now", len(good))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, line := do(t, uploadForm(t, r.addr, pagePassword, token, tc.file, tc.content))
			if code != tc.code || !strings.Contains(line, tc.says) {
				t.Errorf("%d %q; want %d %q", code, line, tc.code, tc.says)
			}
		})
	}
	if extra := catalogLeftovers(t, dir, "cam.bin", "meter-1.0.0.bin", "meter-1.1.0.bin", "meter-2.0.0.bin"); len(extra) > 0 {
		t.Errorf("refused uploads left %v in the catalog folder", extra)
	}
	dev := emu.New(emu.ESP8266v31)
	dev.STAMAC = "5C:CF:7F:00:00:C1"
	if res := dev.Update(r.addr, "/meter-2.0.0.bin"); res.Outcome != emu.OK || !bytes.Equal(res.Image, good) {
		t.Errorf("a device downloading the uploaded image: %v", res)
	}

	// Under --verify-key, an unsigned image is refused as the catalog
	// refuses it.
	site := newSiteKey(t, "rsa2048")
	signed := start(t, "--catalog", t.TempDir(), "--admin-password", pagePassword, "--verify-key", site.pem)
	token = pageToken(t, signed.addr, pagePassword)
	code, line := do(t, uploadForm(t, signed.addr, pagePassword, token, "meter-2.0.0.bin", good))
	if code != 422 || !strings.Contains(line, "signature") {
		t.Errorf("an unsigned upload under --verify-key: %d %q", code, line)
	}
	sig := mustSign(t)(imagegen.SignESP8266(good, site.priv, false))
	if code, line := do(t, uploadForm(t, signed.addr, pagePassword, token, "meter-2.0.0.bin", sig)); code != 201 {
		t.Errorf("a signed upload under --verify-key: %d %q", code, line)
	}
	// A LittleFS image is taken whole, and refused cut short.
	fsImg := fsimage.Build(4096, 64)
	token = pageToken(t, r.addr, pagePassword)
	if code, line := do(t, uploadForm(t, r.addr, pagePassword, token, "meter.littlefs.bin", fsImg)); code != 201 || !strings.Contains(line, "littlefs filesystem image") {
		t.Errorf("a whole LittleFS image: %d %q", code, line)
	}
	if code, line := do(t, uploadForm(t, r.addr, pagePassword, token, "cut.littlefs.bin", fsImg[:len(fsImg)-4096])); code != 422 {
		t.Errorf("a LittleFS image cut short: %d %q", code, line)
	}

	// The embedded catalog cannot change.
	embedded := start(t, "--admin-password", pagePassword)
	code, line = do(t, uploadForm(t, embedded.addr, pagePassword, pageToken(t, embedded.addr, pagePassword), "meter-2.0.0.bin", good))
	if code != 409 || !strings.Contains(line, "embedded in this binary") {
		t.Errorf("an upload to the embedded catalog: %d %q", code, line)
	}
}

// TestPageRemoveRefusesAnImageThePolicyNames: removing an image a policy
// rule pins is refused with the rule's line, and the file stays; the
// page cannot make a rule fail closed behind the operator's back.
func TestPageRemoveRefusesAnImageThePolicyNames(t *testing.T) {
	dir, _, _, _ := fleetCatalog(t)
	pol := filepath.Join(t.TempDir(), "policy")
	os.WriteFile(pol, []byte("group lab 5C:CF:7F:12:*\npin lab meter-1.1.0.bin\n"), 0o644)
	r := start(t, "--catalog", dir, "--policy", pol, "--admin-password", pagePassword)
	form := url.Values{"path": {"meter-1.1.0.bin"}, "token": {pageToken(t, r.addr, pagePassword)}}
	code, line := post(t, r.addr, "/admin/remove", pagePassword, form, nil)
	if code != 409 || !strings.Contains(line, "policy "+pol+":2 (pin) names meter-1.1.0.bin; edit the policy first") {
		t.Errorf("remove of a pinned image: %d %q", code, line)
	}
	if _, err := os.Stat(filepath.Join(dir, "meter-1.1.0.bin")); err != nil {
		t.Errorf("the pinned image's file is gone: %v", err)
	}
}

// TestStatusPageIsWholeWithoutJavaScript: the page as served, before any
// script runs, already holds the summary strip, the device rows (problems
// first) and the catalog: a browser without JavaScript reads it all.
func TestStatusPageIsWholeWithoutJavaScript(t *testing.T) {
	dir, v1, _, _ := fleetCatalog(t)
	r := start(t, "--catalog", dir)
	dev := emu.New(emu.ESP8266v31)
	dev.STAMAC, dev.Running = "5C:CF:7F:00:00:F1", v1
	if res := dev.Update(r.addr, "/update"); res.Outcome != emu.OK {
		t.Fatalf("update: %v", res)
	}
	// The download's end reaches the record within its linger (100 ms).
	var page string
	for i := 0; i < 20 && !strings.Contains(page, "sent (meter-1.1.0.bin)"); i++ {
		time.Sleep(100 * time.Millisecond)
		page = getBody(t, "http://"+r.addr+"/")
	}
	for _, want := range []string{`id="summary"`, `<b>1</b> devices`, `tr data-mac="5C:CF:7F:00:00:F1"`, "sent (meter-1.1.0.bin)", `tr data-path="cam.bin"`, `data-label="Size">11 MB<`} {
		if !strings.Contains(page, want) {
			t.Errorf("the served page lacks %q", want)
		}
	}
}
