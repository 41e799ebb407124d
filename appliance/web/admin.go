package web

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"otabox/appliance/store"
)

// Admin carries out what a technician asks from the page. Each method
// answers one line: what was done, or (as a *Refusal) why not.
type Admin interface {
	// Upload streams body into the catalog folder as folder/name once it
	// is checked as the catalog checks files; nothing stays behind when
	// it is refused.
	Upload(ctx context.Context, folder, name string, body io.Reader) (Done, error)
	// Remove takes a file out of the catalog folder.
	Remove(ctx context.Context, path string) (Done, error)
	// Retry clears a device's hold-back.
	Retry(ctx context.Context, mac string) (Done, error)
	// StartBatch opens a factory batch giving image to /update.
	StartBatch(ctx context.Context, name, image string) (Done, error)
	// CloseBatch closes one; force closes it with boards unproven.
	CloseBatch(ctx context.Context, name string, force bool) (Done, error)
}

// Done is an action carried out: its status code and its one line.
type Done struct {
	Status int
	Line   string
}

// Refusal is an action not carried out: the status code and the reason.
type Refusal struct {
	Status int
	Reason string
}

func (r *Refusal) Error() string { return r.Reason }

// Refuse makes a Refusal.
func Refuse(status int, format string, args ...any) error {
	return &Refusal{Status: status, Reason: fmt.Sprintf(format, args...)}
}

// DefaultMaxUpload is the largest image the page takes (--max-upload):
// the largest flash of the ESP8266 and of most ESP32 modules.
const DefaultMaxUpload = 16 << 20

// Uploads are bounded in time as well as size: each read of the body
// must arrive within uploadIdle, the whole body within uploadMax, and
// one upload runs at a time (the next is told to retry).
const (
	uploadIdle = 30 * time.Second
	uploadMax  = 10 * time.Minute
)

// actionsOff is what the page and a POST say when no admin password is set.
const actionsOff = "Actions are off: start otabox with --admin-password-file FILE (or --admin-password) to upload images, retry devices and open or close batches from this page"

// token is the page's CSRF token: an HMAC of a secret made at start-up,
// so that only a page this server rendered (behind the password) can
// carry it; a page from another origin cannot read it.
func newToken() string {
	secret := make([]byte, 32)
	rand.Read(secret)
	m := hmac.New(sha256.New, secret)
	io.WriteString(m, "otabox admin action")
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// actionsOn says whether the page offers actions.
func (h *Handler) actionsOn() bool { return h.src.Admin != nil && h.src.Password != "" }

// action wraps an admin action: the password (protect), then same origin
// and the token, then do; the answer and a log line say what happened,
// and the fleet record keeps it.
func (h *Handler) action(name string, do func(w http.ResponseWriter, r *http.Request) (target string, d Done, err error)) http.HandlerFunc {
	return h.protect(func(w http.ResponseWriter, r *http.Request) {
		if !h.actionsOn() {
			h.answer(w, r, name, "", Done{}, Refuse(http.StatusForbidden, "%s", actionsOff))
			return
		}
		if err := h.sameOrigin(r); err != nil {
			h.answer(w, r, name, "", Done{}, err)
			return
		}
		if !h.tokenOK(w, r, name == "upload") {
			h.answer(w, r, name, "", Done{}, Refuse(http.StatusForbidden, "the form's token is missing or stale: reload the status page and try again"))
			return
		}
		target, d, err := do(w, r)
		h.answer(w, r, name, target, d, err)
	})
}

// tokenOK checks the page's token: in the X-Otabox-Token header, or in
// the form (urlencoded or multipart, read whole within 64 KB). An upload's
// form is streamed instead: its token field, which comes first, is
// checked by upload before anything is written, so here only a header
// token is (and must match when sent).
func (h *Handler) tokenOK(w http.ResponseWriter, r *http.Request, streamed bool) bool {
	if t := r.Header.Get("X-Otabox-Token"); t != "" {
		return h.isToken(t)
	}
	if streamed {
		return true
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/") {
		if err := r.ParseMultipartForm(64 << 10); err != nil {
			return false
		}
	}
	return h.isToken(r.PostFormValue("token"))
}

// isToken compares t with the page's token in constant time.
func (h *Handler) isToken(t string) bool {
	return subtle.ConstantTimeCompare([]byte(t), []byte(h.token)) == 1
}

// sameOrigin refuses a POST another site's page made the browser send:
// its Origin (or, without one, its Referer) must be this server.
func (h *Handler) sameOrigin(r *http.Request) error {
	from := r.Header.Get("Origin")
	if from == "" {
		from = r.Header.Get("Referer")
	}
	if from == "" {
		return nil // not a browser (curl): the password and the token decide
	}
	u, err := url.Parse(from)
	if err != nil || u.Host != r.Host {
		return Refuse(http.StatusForbidden, "cross-origin request from %q refused: actions are taken only from this server's own page", from)
	}
	return nil
}

// answer writes an action's outcome as one line (plain text; or, to a
// browser's form without JavaScript, a small page with a way back), logs
// it with who asked, and records it.
func (h *Handler) answer(w http.ResponseWriter, r *http.Request, name, target string, d Done, err error) {
	var ref *Refusal
	switch {
	case errors.As(err, &ref):
		d = Done{Status: ref.Status, Line: ref.Reason}
	case err != nil:
		d = Done{Status: http.StatusInternalServerError, Line: err.Error()}
	case d.Status == 0:
		d.Status = http.StatusOK
	}
	user, _, _ := r.BasicAuth()
	who := clientOf(r)
	if user != "" {
		who = user + "@" + who
	}
	decision := name
	if d.Status >= 400 {
		decision = "refuse"
		h.src.Logger.Warn("admin: "+name+" refused", "who", who, "target", target, "status", d.Status, "reason", d.Line)
	} else {
		h.src.Logger.Info("admin: "+name, "who", who, "target", target, "status", d.Status, "result", d.Line)
	}
	h.src.Store.Acted(&store.Event{Time: time.Now().UTC(), Client: who, Method: r.Method, Target: name + " " + target,
		Decision: decision, Status: d.Status, Reason: d.Line})
	if d.Status >= 400 {
		w.Header().Set("X-Otabox-Reason", d.Line)
	}
	if accepts, _, _ := mime.ParseMediaType(strings.Split(r.Header.Get("Accept"), ",")[0]); accepts == "text/html" {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(d.Status)
		resultPage.Execute(w, map[string]any{"OK": d.Status < 400, "Line": d.Line})
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(d.Status)
	io.WriteString(w, d.Line+"\n")
}

var resultPage = template.Must(template.New("result").Parse(`<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>otabox</title></head>
<body style="font:16px/1.4 system-ui,sans-serif;max-width:40em;margin:2em auto;padding:0 12px"><p style="color:{{if .OK}}#1a7f37{{else}}#c62828{{end}}">{{.Line}}</p><p><a href="./">Back to the status page</a></p></body></html>`))

// upload takes a multipart form: the token first, then an optional
// folder, then the file (the page's form sends them in that order, so
// that nothing is written before the token is checked).
func (h *Handler) upload(w http.ResponseWriter, r *http.Request) (string, Done, error) {
	select {
	case h.uploading <- struct{}{}:
		defer func() { <-h.uploading }()
	default:
		return "", Done{}, Refuse(http.StatusServiceUnavailable, "another upload is running; try again when it is done")
	}
	body := &idleReader{r: r.Body, rc: http.NewResponseController(w), end: time.Now().Add(uploadMax)}
	r.Body = body
	defer func() {
		body.rc.SetReadDeadline(time.Time{})
		prolong(w) // the answer gets its own time, however long the body took
	}()
	mr, err := r.MultipartReader()
	if err != nil {
		return "", Done{}, Refuse(http.StatusBadRequest, "an upload is a multipart form (token, folder, file): %v", err)
	}
	tokenOK := h.isToken(r.Header.Get("X-Otabox-Token"))
	folder := ""
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return "", Done{}, Refuse(http.StatusBadRequest, "the form has no file")
		}
		if err != nil {
			return "", Done{}, Refuse(http.StatusBadRequest, "the form could not be read: %v", err)
		}
		switch part.FormName() {
		case "token":
			b, _ := io.ReadAll(io.LimitReader(part, 256))
			tokenOK = tokenOK || h.isToken(string(b))
		case "folder":
			b, _ := io.ReadAll(io.LimitReader(part, 1024))
			folder = strings.TrimSpace(string(b))
		case "file":
			name := part.FileName()
			if !tokenOK {
				return name, Done{}, Refuse(http.StatusForbidden, "the form's token is missing or stale (it must come before the file): reload the status page and try again")
			}
			if name == "" {
				return "", Done{}, Refuse(http.StatusBadRequest, "the form's file has no name")
			}
			target := name
			if folder != "" {
				target = folder + "/" + name
			}
			d, err := h.src.Admin.Upload(r.Context(), folder, name, part)
			return target, d, err
		}
	}
}

func (h *Handler) remove(_ http.ResponseWriter, r *http.Request) (string, Done, error) {
	p := r.PostFormValue("path")
	d, err := h.src.Admin.Remove(r.Context(), p)
	return p, d, err
}

func (h *Handler) retry(_ http.ResponseWriter, r *http.Request) (string, Done, error) {
	mac := r.PostFormValue("mac")
	d, err := h.src.Admin.Retry(r.Context(), mac)
	return mac, d, err
}

func (h *Handler) batchStart(_ http.ResponseWriter, r *http.Request) (string, Done, error) {
	name := strings.TrimSpace(r.PostFormValue("name"))
	d, err := h.src.Admin.StartBatch(r.Context(), name, strings.TrimSpace(r.PostFormValue("image")))
	return name, d, err
}

func (h *Handler) batchClose(_ http.ResponseWriter, r *http.Request) (string, Done, error) {
	name := r.PostFormValue("name")
	d, err := h.src.Admin.CloseBatch(r.Context(), name, r.PostFormValue("force") != "")
	return name, d, err
}

// idleReader reads an upload's body with a read deadline renewed at each
// read (uploadIdle), within the upload's end: a client that stops
// sending is cut off, not held.
type idleReader struct {
	r   io.ReadCloser
	rc  *http.ResponseController
	end time.Time
}

func (b *idleReader) Read(p []byte) (int, error) {
	t := time.Now().Add(uploadIdle)
	if t.After(b.end) {
		t = b.end
	}
	b.rc.SetReadDeadline(t)
	n, err := b.r.Read(p)
	if err != nil && time.Now().After(b.end) {
		err = fmt.Errorf("the upload took longer than %v: %w", uploadMax, err)
	}
	return n, err
}

func (b *idleReader) Close() error { return b.r.Close() }

// prolong gives the answer to a long request (an upload) its write time
// from now rather than from the request's head (see httpapi.extraGate).
func prolong(w http.ResponseWriter) {
	for w != nil {
		if p, ok := w.(interface{ Prolong() }); ok {
			p.Prolong()
			return
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return
		}
		w = u.Unwrap()
	}
}
