package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"otabox/appliance/catalog"
	"otabox/appliance/store"
	"otabox/appliance/web"
)

// admin carries out the status page's actions on the appliance: files go
// into and out of the --catalog folder (and are published by the watcher,
// as any file copied there is), holds and batches go into the fleet
// record, exactly as the command line's retry and batch commands do.
type admin struct {
	a         *Appliance
	maxUpload int64
}

// uploadPrefix names the hidden folders uploads are written in before
// they are checked: the catalog skips dot-names, and a folder left by a
// crash is removed at the next start.
const uploadPrefix = ".otabox-upload-"

// publishWait is how long an action waits to see the catalog change
// before it answers that the change is still being read.
const publishWait = 10 * time.Second

func (ad *admin) folder() (string, error) {
	if ad.a.dir == nil {
		return "", web.Refuse(http.StatusConflict, "the catalog is embedded in this binary and cannot change; serve a folder (--catalog DIR; the package's service serves /var/lib/otabox/firmware) to add or remove images here")
	}
	return ad.a.dir.path, nil
}

// Upload writes body to a hidden folder inside the catalog folder, checks
// it there as the catalog checks files (size, image parse, filesystem
// image, signature under --verify-key), then links it into place under
// folder/name, never over an existing file, and waits for the watcher to
// publish it.
func (ad *admin) Upload(ctx context.Context, folder, name string, body io.Reader) (web.Done, error) {
	dir, err := ad.folder()
	if err != nil {
		return web.Done{}, err
	}
	folder, err = catalog.Clean(folder)
	if err != nil {
		return web.Done{}, web.Refuse(http.StatusBadRequest, "folder: %v", err)
	}
	if strings.HasPrefix(name, ".") || strings.Contains(name, "/") {
		return web.Done{}, web.Refuse(http.StatusBadRequest, "file name %q: a catalog file name has no slash and does not start with a dot", name)
	}
	if _, err := catalog.Clean(name); err != nil || name == "" {
		return web.Done{}, web.Refuse(http.StatusBadRequest, "file name %q: %v; rename the file and upload it again", name, err)
	}
	cat := ad.a.h.Catalog()
	if _, ok := cat.Dir(folder); !ok {
		return web.Done{}, web.Refuse(http.StatusBadRequest, "folder %q is not in the catalog", folder)
	}
	p := path.Join(folder, name)
	root, err := os.OpenRoot(dir)
	if err != nil {
		return web.Done{}, fmt.Errorf("catalog %s: %w", dir, err)
	}
	defer root.Close()
	if _, err := root.Lstat(p); err == nil {
		return web.Done{}, web.Refuse(http.StatusConflict, "%s is already in the catalog folder; remove it first, or upload under another name", p)
	}
	tmp, err := os.MkdirTemp(dir, uploadPrefix)
	if err != nil {
		return web.Done{}, fmt.Errorf("upload into %s: %w", dir, err)
	}
	defer os.RemoveAll(tmp) // refused or linked into place: nothing stays behind
	staged := filepath.Join(tmp, filepath.FromSlash(p))
	if err := os.MkdirAll(filepath.Dir(staged), 0o755); err != nil {
		return web.Done{}, fmt.Errorf("upload: %w", err)
	}
	f, err := os.OpenFile(staged, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return web.Done{}, fmt.Errorf("upload: %w", err)
	}
	n, err := io.Copy(f, io.LimitReader(body, ad.maxUpload+1))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	switch {
	case n > ad.maxUpload:
		return web.Done{}, web.Refuse(http.StatusRequestEntityTooLarge, "%s is larger than the %d-byte upload limit (--max-upload)", name, ad.maxUpload)
	case err != nil:
		if errors.Is(err, syscall.ENOSPC) {
			return web.Done{}, web.Refuse(http.StatusInsufficientStorage, "the catalog folder's disk is full after %d bytes of %s", n, name)
		}
		return web.Done{}, web.Refuse(http.StatusBadRequest, "%s: the upload broke off after %d bytes: %v", name, n, err)
	case n == 0:
		return web.Done{}, web.Refuse(http.StatusUnprocessableEntity, "%s is empty", name)
	}
	e, why := ad.check(tmp, p)
	if e == nil {
		return web.Done{}, web.Refuse(http.StatusUnprocessableEntity, "%s refused: %s", name, why)
	}
	if err := place(staged, filepath.Join(dir, filepath.FromSlash(p))); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return web.Done{}, web.Refuse(http.StatusConflict, "%s appeared in the catalog folder during the upload; remove it first, or upload under another name", p)
		}
		return web.Done{}, fmt.Errorf("upload %s: %w", p, err)
	}
	syncDir(filepath.Join(dir, filepath.FromSlash(folder)))
	what := describeEntry(e)
	if ad.waitFor(ctx, func(c *catalog.Catalog) bool { got, ok := c.File(p); return ok && got.SHA256 == e.SHA256 }) {
		return web.Done{Status: http.StatusCreated, Line: fmt.Sprintf("%s (%s) is in the catalog; devices can fetch it now", p, what)}, nil
	}
	return web.Done{Status: http.StatusAccepted, Line: fmt.Sprintf("%s (%s) is saved in the catalog folder; it joins the catalog once the folder is read again", p, what)}, nil
}

// check loads the staged folder as the catalog loads its own, and says
// why p stays out, or what it is. Only firmware and filesystem images
// are taken: anything else would be offered to devices as a plain file.
func (ad *admin) check(tmp, p string) (*catalog.Entry, string) {
	c, err := catalog.Load(os.DirFS(tmp), catalog.Options{Keys: ad.a.cfg.VerifyKeys, MaxFileSize: ad.maxUpload, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, err.Error()
	}
	if why, ok := c.Skipped()[p]; ok {
		return nil, why
	}
	e, ok := c.File(p)
	switch {
	case !ok:
		return nil, "the catalog would not take it"
	case e.Type != catalog.Bin && e.FS == nil:
		return nil, "not an ESP firmware image (no 0xE9 header) nor a LittleFS or SPIFFS filesystem image"
	}
	return e, ""
}

// place links staged to dst, which must not exist; where the filesystem
// has no hard links (FAT on a USB stick) it renames after a last check.
func place(staged, dst string) error {
	err := os.Link(staged, dst)
	if err == nil || errors.Is(err, fs.ErrExist) {
		return err
	}
	if _, serr := os.Lstat(dst); serr == nil {
		return fs.ErrExist
	}
	return os.Rename(staged, dst)
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// describeEntry says what a catalog file is, in a few words.
func describeEntry(e *catalog.Entry) string {
	switch {
	case e.Image != nil:
		s := e.Image.Chip.String() + " image"
		if e.Image.Version != "" {
			s += " " + e.Image.Version
		}
		return s + ", " + fmt.Sprint(e.Size) + " bytes"
	case e.FS != nil:
		return fmt.Sprintf("%s filesystem image, %d bytes", e.FS.Kind, e.Size)
	}
	return fmt.Sprint(e.Size, " bytes")
}

// waitFor waits until the catalog served satisfies ok, up to publishWait.
func (ad *admin) waitFor(ctx context.Context, ok func(*catalog.Catalog) bool) bool {
	deadline := time.Now().Add(publishWait)
	for {
		if ok(ad.a.h.Catalog()) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Remove deletes a file from the catalog folder, unless an open batch
// gives it or a policy rule names it: that would make them fail closed,
// so the technician is told to close or edit them first.
func (ad *admin) Remove(ctx context.Context, p string) (web.Done, error) {
	dir, err := ad.folder()
	if err != nil {
		return web.Done{}, err
	}
	p, err = catalog.Clean(p)
	if err != nil || p == "" {
		return web.Done{}, web.Refuse(http.StatusBadRequest, "path %q: %v", p, err)
	}
	cat := ad.a.h.Catalog()
	if _, ok := cat.File(p); !ok {
		if _, skipped := cat.Skipped()[p]; !skipped {
			return web.Done{}, web.Refuse(http.StatusNotFound, "%s is not in the catalog", p)
		}
	}
	if bs, err := ad.a.store.OpenBatches(ctx); err == nil {
		for _, b := range bs {
			if b.Image == p {
				return web.Done{}, web.Refuse(http.StatusConflict, "batch %s is open and gives %s; close the batch first", b.Name, p)
			}
		}
	}
	if pol := ad.a.h.Policy(); pol != nil {
		var rest []string
		for _, im := range images(cat) {
			if im != p {
				rest = append(rest, im)
			}
		}
		for _, ref := range pol.Missing(rest) {
			if ref.Image == p {
				return web.Done{}, web.Refuse(http.StatusConflict, "policy %s:%d (%s) names %s; edit the policy first", ad.a.cfg.Policy, ref.Line, ref.Rule, p)
			}
		}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return web.Done{}, fmt.Errorf("catalog %s: %w", dir, err)
	}
	defer root.Close()
	if err := root.Remove(p); err != nil {
		return web.Done{}, fmt.Errorf("remove %s: %w", p, err)
	}
	syncDir(filepath.Join(dir, filepath.FromSlash(path.Dir(p))))
	if ad.waitFor(ctx, func(c *catalog.Catalog) bool { _, ok := c.File(p); return !ok }) {
		return web.Done{Line: p + " is removed; devices are no longer offered it (downloads already running finish)"}, nil
	}
	return web.Done{Status: http.StatusAccepted, Line: p + " is deleted from the catalog folder; it leaves the catalog once the folder is read again"}, nil
}

// Retry clears a device's hold-back, as `otabox retry` does.
func (ad *admin) Retry(ctx context.Context, mac string) (web.Done, error) {
	if ad.a.store == nil {
		return web.Done{}, web.Refuse(http.StatusConflict, "no fleet record is kept (--data-dir \"\"): there is no hold-back to clear")
	}
	m, err := store.NormalizeMAC(mac)
	if err != nil {
		return web.Done{}, web.Refuse(http.StatusBadRequest, "%v", err)
	}
	if _, ok, err := ad.a.store.Device(ctx, m); err != nil {
		return web.Done{}, err
	} else if !ok {
		return web.Done{}, web.Refuse(http.StatusNotFound, "%s is not in the fleet record", m)
	}
	if !ad.a.store.Retry(m) {
		return web.Done{Line: m + " had no hold-back or failures to clear"}, nil
	}
	return web.Done{Line: m + ": hold-back cleared; its next check-in may be sent the image again"}, nil
}

// StartBatch opens a factory batch, as `otabox batch start` does.
func (ad *admin) StartBatch(ctx context.Context, name, image string) (web.Done, error) {
	if ad.a.store == nil {
		return web.Done{}, web.Refuse(http.StatusConflict, "no fleet record is kept (--data-dir \"\"): a batch needs one")
	}
	b, e, err := NewBatch(ad.a.h.Catalog(), name, image)
	if errors.Is(err, ErrNotInCatalog) {
		return web.Done{}, web.Refuse(http.StatusNotFound, "%v", err)
	} else if err != nil {
		return web.Done{}, web.Refuse(http.StatusBadRequest, "%v", err)
	}
	b.Source = "page"
	if err := store.StartBatch(ad.a.cfg.DataDir, b); err != nil {
		if errors.Is(err, store.ErrBatchExists) {
			return web.Done{}, web.Refuse(http.StatusConflict, "%v", err)
		}
		return web.Done{}, err
	}
	return web.Done{Status: http.StatusCreated, Line: fmt.Sprintf("batch %s open: every device asking /update gets %s (%s); watch /station", b.Name, b.Image, describeEntry(e))}, nil
}

// CloseBatch closes one, as `otabox batch close [--force]` does.
func (ad *admin) CloseBatch(ctx context.Context, name string, force bool) (web.Done, error) {
	if ad.a.store == nil {
		return web.Done{}, web.Refuse(http.StatusConflict, "no fleet record is kept (--data-dir \"\")")
	}
	b, err := store.CloseBatch(ad.a.cfg.DataDir, name, force)
	switch {
	case errors.Is(err, store.ErrUnproven):
		return web.Done{}, web.Refuse(http.StatusConflict, "%v", err)
	case err != nil && b != nil: // already closed
		return web.Done{}, web.Refuse(http.StatusConflict, "%v", err)
	case err != nil && strings.HasPrefix(err.Error(), "no batch"):
		return web.Done{}, web.Refuse(http.StatusNotFound, "%v", err)
	case err != nil:
		return web.Done{}, err
	}
	return web.Done{Line: fmt.Sprintf("batch %s closed; its report: api/batches/%s/report.html", b.Name, b.Name)}, nil
}

// removeStaleUploads removes the upload folders a crash left in dir.
func removeStaleUploads(dir string, log *slog.Logger) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), uploadPrefix) {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err == nil {
				log.Info("catalog: removed an upload left unfinished by the last run", "folder", e.Name())
			}
		}
	}
}
