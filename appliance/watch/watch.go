// Package watch keeps a catalog read from a directory current while otabox
// serves it: firmware copied onto the box at a site is offered without a
// restart. Changes are seen through fsnotify, SIGHUP and a periodic rescan
// (for file systems that do not report changes); each is published only
// once the files have stopped changing and validate, as one new immutable
// catalog swapped in whole. Downloads already running keep the bytes they
// started with: they hold the old catalog's entries.
package watch

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"otabox/appliance/catalog"
)

// Config tells a Watcher what to watch and how to load it.
type Config struct {
	Dir string // the catalog directory
	// Load reads the directory again; rehash reads every settled file even
	// when its stamp is unchanged.
	Load    func(prev *catalog.Catalog, unstable map[string]bool, rehash bool) (*catalog.Catalog, error)
	Publish func(*catalog.Catalog)
	Logger  *slog.Logger
	// Settle is how long a file must stay the same size and time before it
	// is published. Default 1 s.
	Settle time.Duration
	// Rescan is the fallback poll interval. Default 30 s.
	Rescan time.Duration
	// Reload asks for a reload now (SIGHUP).
	Reload <-chan struct{}
}

// ErrLogged marks an error of Load that Load has already logged (at a
// rate of its own): the watcher keeps the catalog and says nothing more.
var ErrLogged = errors.New("already logged")

// stat is what a snapshot remembers of one file.
type stat = catalog.Stamp

// Run watches until ctx ends. current is the catalog being served.
func Run(ctx context.Context, cfg Config, current *catalog.Catalog) {
	if cfg.Settle == 0 {
		cfg.Settle = time.Second
	}
	if cfg.Rescan == 0 {
		cfg.Rescan = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	log := cfg.Logger
	// The folder's name in its parent, absolute: events of the parent's
	// watch come named from it, those of the folder's own as cfg.Dir
	// names them (relative, even ".", or absolute).
	abs, err := filepath.Abs(cfg.Dir)
	if err != nil {
		abs = filepath.Clean(cfg.Dir)
	}
	parent := filepath.Dir(abs)
	w, err := fsnotify.NewWatcher()
	if err != nil {
		log.Warn("catalog: no change notifications; polling only", "err", err, "every", cfg.Rescan)
	} else {
		defer w.Close()
		addDirs(w, cfg.Dir)
		// The folder's own name, in its parent: a release switch (a
		// symlink flipped) or the folder made again is seen at once. The
		// parent's other names are not the catalog's business.
		if parent != abs {
			w.Add(parent)
		}
	}
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w != nil {
		events, errs = w.Events, w.Errors
	}
	last := snapshot(cfg.Dir)
	rescan := time.NewTicker(cfg.Rescan)
	defer rescan.Stop()
	// One look right away: a change between the catalog's load and the
	// watch's start would otherwise wait for an event that never comes.
	settle := time.NewTimer(cfg.Settle)
	pending := true
	rehash := false
	// more: files the last load left unread (catalog.Options.Budget) are
	// read in further rounds, each published as it completes; again says
	// the next one runs at once.
	more := time.NewTimer(time.Hour)
	more.Stop()
	n, _ := current.PendingCount()
	again := n > 0
	publish := func(next *catalog.Catalog) {
		if changed := diff(log, current, next); changed {
			cfg.Publish(next)
			current = next
		} else {
			next.Close(current) // not served: release what only it pinned
		}
		if n, _ := current.PendingCount(); n > 0 {
			// The next round at once while rounds read something; when
			// every file left is still being written, after a settle.
			if st := next.Stats(); st.Read+st.Cached > 0 {
				again = true
			} else {
				more.Reset(cfg.Settle)
			}
		}
	}
	round := func() {
		next, err := cfg.Load(current, nil, false)
		if err != nil {
			if !errors.Is(err, ErrLogged) {
				log.Error("catalog: reading the remaining files failed; still serving the previous catalog", "err", err)
			}
			return
		}
		publish(next)
	}
	for {
		// Rounds that read something go on at once, before anything else:
		// each is a load of the folder too (a new file joins it, pending),
		// and a change seen meanwhile waits for them instead of putting a
		// settle's sleep between two rounds of a first start.
		if again {
			again = false
			if ctx.Err() != nil {
				return
			}
			round()
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-more.C:
			round()
			continue
		case ev := <-events:
			name := filepath.Clean(ev.Name)
			if parent != abs && filepath.Dir(name) == parent && name != abs {
				continue // a sibling of the catalog folder
			}
			if name == abs {
				addDirs(w, cfg.Dir) // the path leads to another folder now
			} else if ev.Op&fsnotify.Create != 0 {
				if fi, err := os.Stat(ev.Name); err == nil && fi.IsDir() {
					addDirs(w, ev.Name) // follow new sub-folders
				}
			}
			settle.Reset(cfg.Settle) // wait for the burst of events to end
			pending = true
			continue
		case err := <-errs:
			log.Warn("catalog: watch", "err", err)
			continue
		case <-cfg.Reload:
			log.Info("catalog: reload requested; re-reading every file")
			rehash = true
		case <-rescan.C:
			if same(last, snapshot(cfg.Dir)) {
				continue
			}
		case <-settle.C:
			if !pending {
				continue
			}
		}
		pending = false
		next, snap, unstable := reload(cfg, current, rehash)
		rehash = false
		if next == nil {
			continue
		}
		last = snap
		if len(unstable) > 0 {
			settle.Reset(cfg.Settle) // come back for the files still being copied
			pending = true
		}
		publish(next)
	}
}

// reload loads the directory again, holding back files that changed
// during the settle period.
func reload(cfg Config, current *catalog.Catalog, rehash bool) (*catalog.Catalog, map[string]stat, map[string]bool) {
	before := snapshot(cfg.Dir)
	time.Sleep(cfg.Settle)
	after := snapshot(cfg.Dir)
	unstable := map[string]bool{}
	now := time.Now()
	for p, st := range after {
		if b, ok := before[p]; !ok || !b.Equal(st) || now.Sub(st.ModTime) < cfg.Settle {
			unstable[p] = true
		}
	}
	next, err := cfg.Load(current, unstable, rehash)
	if err != nil {
		if !errors.Is(err, ErrLogged) {
			cfg.Logger.Error("catalog: reload failed; still serving the previous catalog", "err", err)
		}
		return nil, nil, nil
	}
	return next, after, unstable
}

// addedOneByOne is how many added files one publish names at INFO, one
// line each; past it (a first start of a large folder), one INFO line
// counts them and the names go to DEBUG, so that the log stays readable.
const addedOneByOne = 20

// diff logs what changed between two catalogs and reports whether anything did.
func diff(log *slog.Logger, old, next *catalog.Catalog) bool {
	changed := false
	var added []*catalog.Entry
	for _, e := range next.Files() {
		o, ok := old.File(e.Path)
		switch {
		case !ok:
			added = append(added, e)
			changed = true
		case o.MD5 != e.MD5 || o.Size != e.Size || o.Type != e.Type:
			log.Info("catalog: content changed", "path", e.Path, "size", e.Size, "md5", e.MD5, "was", o.MD5)
			changed = true
		case o != e && !o.Stamp.Equal(e.Stamp):
			changed = true // touched, same bytes: publish the fresh stamp quietly
		}
	}
	for _, o := range old.Files() {
		if _, ok := next.File(o.Path); !ok {
			reason := "removed"
			if why, skipped := next.Skipped()[o.Path]; skipped {
				reason = why
			}
			log.Warn("catalog: left the catalog", "path", o.Path, "reason", reason)
			changed = true
		}
	}
	level := slog.LevelInfo
	if len(added) > addedOneByOne {
		var bytes int64
		for _, e := range added {
			bytes += e.Size
		}
		log.Info("catalog: added files", "count", len(added), "bytes", bytes, "first", added[0].Path, "last", added[len(added)-1].Path, "each", "at debug level")
		level = slog.LevelDebug
	}
	for _, e := range added {
		log.Log(context.Background(), level, "catalog: added", "path", e.Path, "type", string(e.Type), "size", e.Size, "md5", e.MD5)
	}
	if !changed && !sameDirs(old, next) {
		changed = true
	}
	return changed
}

func sameDirs(a, b *catalog.Catalog) bool {
	return strings.Join(a.Dirs(), "\n") == strings.Join(b.Dirs(), "\n")
}

// through is dir as a root to walk: with a trailing separator, so that a
// symlink naming the folder (a release switch) is followed, as opening it
// does; filepath.WalkDir does not follow a root that is a symlink.
func through(dir string) string {
	return strings.TrimSuffix(dir, string(filepath.Separator)) + string(filepath.Separator)
}

// snapshot maps every regular file under dir to its size and mtime.
func snapshot(dir string) map[string]stat {
	snap := map[string]stat{}
	dir = through(dir)
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			snap[filepath.ToSlash(rel)] = catalog.StampOf(fi)
		}
		return nil
	})
	return snap
}

func same(a, b map[string]stat) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !w.Equal(v) {
			return false
		}
	}
	return true
}

func addDirs(w *fsnotify.Watcher, root string) {
	if w == nil {
		return
	}
	var dirs []string
	filepath.WalkDir(through(root), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	sort.Strings(dirs)
	for _, d := range dirs {
		w.Add(d)
	}
}
