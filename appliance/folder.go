package appliance

import (
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"otabox/appliance/catalog"
	"otabox/appliance/lograte"
	"otabox/appliance/watch"
)

// folder is a --catalog directory as the operator named it: a path, looked
// up again before every load, not a directory opened once. A release
// switch (`ln -sfn release2 current`) or a folder deleted and made again
// is then followed: the path leads to another directory, which is opened
// (as an os.Root, so nothing inside leads out of it) and read whole before
// it is served. A path that leads nowhere keeps the last catalog served,
// with an ERROR at most once a minute and a banner on the status page.
type folder struct {
	path string
	log  *slog.Logger

	mu       sync.Mutex
	root     *os.Root // nil when the first one came from OpenDir
	fsys     fs.FS
	id       catalog.Stamp // the directory's device and inode
	resolved string        // where the path led when it was opened
	fault    string        // why the path leads nowhere now, "" when it does
	goneLog  lograte.Gate  // loads refused, said once a minute
}

func newFolder(src Source, log *slog.Logger) *folder {
	f := &folder{path: src.Dir, log: log, fsys: src.FS}
	if info, err := fs.Stat(src.FS, "."); err == nil {
		f.id = catalog.StampOf(info)
	}
	f.resolved, _ = filepath.EvalSymlinks(src.Dir)
	return f
}

// current is the folder to read now: the one already open when the path
// still leads to it, else the one it leads to now (replaced true, with
// where it led before).
func (f *folder) current() (fsys fs.FS, replaced bool, was string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	info, err := os.Stat(f.path)
	if err == nil && !info.IsDir() {
		err = fmt.Errorf("not a directory")
	}
	if err != nil {
		return nil, false, "", fmt.Errorf("%w: %w", watch.ErrLogged, f.gone(err))
	}
	if f.fault != "" {
		f.log.Info("catalog: the folder is back", "path", f.path, "was", f.fault)
		f.fault = ""
		f.goneLog.Reset()
	}
	id := catalog.StampOf(info)
	if id.Dev == f.id.Dev && id.Ino == f.id.Ino && !f.removed() {
		return f.fsys, false, "", nil
	}
	root, err := os.OpenRoot(f.path)
	if err != nil {
		return nil, false, "", fmt.Errorf("%w: %w", watch.ErrLogged, f.gone(err))
	}
	if f.root != nil {
		f.root.Close() // entries keep their own open files (catalog pins)
	}
	was = f.resolved
	f.root, f.fsys, f.id = root, root.FS(), id
	if f.resolved, err = filepath.EvalSymlinks(f.path); err != nil {
		f.resolved = f.path
	}
	return f.fsys, true, was, nil
}

// removed reports whether the open folder was deleted: a folder made
// again at the path may be given the deleted one's inode number. Called
// with mu held.
func (f *folder) removed() bool {
	info, err := fs.Stat(f.fsys, ".")
	return err != nil || catalog.StampOf(info).Nlink == 0
}

// gone notes that the path leads nowhere, logging it once a minute with
// the count of loads refused meanwhile. Called with mu held.
func (f *folder) gone(err error) error {
	err = fmt.Errorf("catalog %s: %w", f.path, err)
	f.fault = err.Error()
	if n, due := f.goneLog.Note(time.Now()); due {
		f.log.Error("catalog: the folder is gone; still serving the last catalog read from it", "path", f.path, "err", err, "refused_since_last_error", n)
	}
	return err
}

// Fault is why the folder cannot be read now ("" when it can).
func (f *folder) Fault() string {
	if f == nil {
		return ""
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fault
}

// Resolved is where the path led when the folder being served was opened.
func (f *folder) Resolved() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.resolved
}
