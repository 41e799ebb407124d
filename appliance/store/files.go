package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"otabox/appliance/catalog"
	"otabox/appliance/espimage"
)

// The store is the catalog's catalog.DigestCache: what was learned from a
// disk file (its digests and image description) is kept by path and
// stamp, so that after a restart an unchanged file is published without
// being read or hashed again.
var _ catalog.DigestCache = (*Store)(nil)

// fileRow is one remembered file.
type fileRow struct {
	path string
	st   catalog.Stamp
	keys string
	d    catalog.Described
}

// fileFlush is how long remembered files wait to be written together: a
// first start hashing 10,000 files writes them in a few transactions, not
// 10,000 fsyncs.
const fileFlush = 200 * time.Millisecond

// Lookup returns what was learned from path when its stamp (and the key
// set it was verified under) is the one remembered.
func (s *Store) Lookup(path string, st catalog.Stamp, keys string) (catalog.Described, bool) {
	db := s.db.Load()
	if db == nil || !s.filesKept.Load() {
		return catalog.Described{}, false
	}
	r, ok := s.fromStartRows(path)
	if !ok || r.st.Size != st.Size || !r.st.ModTime.Equal(st.ModTime) || r.st.Ctime != st.Ctime ||
		r.st.Ino != st.Ino || r.st.Dev != st.Dev || r.keys != keys {
		// Not among the rows read at the first Lookup, or not as it is
		// now: the table may have it since.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		q, err := s.prepared(db, `SELECT type, md5, sha256, image, verified FROM files
			WHERE path = ? AND size = ? AND mtime_ns = ? AND ctime_ns = ? AND ino = ? AND dev = ? AND keys = ?`)
		if err != nil {
			return catalog.Described{}, false
		}
		if err = q.QueryRowContext(ctx, path, st.Size, st.ModTime.UnixNano(), st.Ctime, int64(st.Ino), int64(st.Dev), keys).Scan(&r.typ, &r.md5, &r.sha256, &r.image, &r.verified); err != nil {
			return catalog.Described{}, false
		}
	}
	d := catalog.Described{Type: catalog.Type(r.typ), MD5: r.md5, SHA256: r.sha256, Verified: r.verified}
	if r.image != "" {
		d.Image = new(espimage.Image)
		if json.Unmarshal([]byte(r.image), d.Image) != nil {
			return catalog.Described{}, false
		}
	}
	return d, true
}

// startRow is a files row as stored, read at the first Lookup.
type startRow struct {
	st                                      catalog.Stamp
	keys, typ, md5, sha256, image, verified string
}

// startRowsFor is how long the rows read at the first Lookup are kept: a
// start's load and its rounds ask within it, each path once.
const startRowsFor = time.Minute

// fromStartRows returns (and forgets) path's row as the files table held
// it at the first Lookup, which reads every row in one query: a restart
// of 10,000 files asked 10,000 queries before. The rows are dropped once
// asked for, and all of them startRowsFor after they were read.
func (s *Store) fromStartRows(path string) (startRow, bool) {
	s.startMu.Lock()
	defer s.startMu.Unlock()
	if !s.startRead {
		s.startRead = true
		s.startRows = s.readStartRows()
		time.AfterFunc(startRowsFor, func() {
			s.startMu.Lock()
			s.startRows = nil
			s.startMu.Unlock()
		})
	}
	r, ok := s.startRows[path]
	if ok {
		delete(s.startRows, path)
	}
	return r, ok
}

// readStartRows reads the whole files table (nil if it cannot: each
// Lookup then asks on its own).
func (s *Store) readStartRows() map[string]startRow {
	db := s.db.Load()
	if db == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := db.QueryContext(ctx, `SELECT path, size, mtime_ns, ctime_ns, ino, dev, keys, type, md5, sha256, image, verified FROM files`)
	if err != nil {
		return nil
	}
	defer rows.Close()
	m := map[string]startRow{}
	for rows.Next() {
		var path string
		var r startRow
		var mtime, ino, dev int64
		if rows.Scan(&path, &r.st.Size, &mtime, &r.st.Ctime, &ino, &dev, &r.keys, &r.typ, &r.md5, &r.sha256, &r.image, &r.verified) != nil {
			return nil
		}
		r.st.ModTime, r.st.Ino, r.st.Dev = time.Unix(0, mtime), uint64(ino), uint64(dev)
		m[path] = r
	}
	if rows.Err() != nil {
		return nil
	}
	return m
}

// Remember keeps what was learned from path; rows are written together
// within fileFlush.
func (s *Store) Remember(path string, st catalog.Stamp, keys string, d catalog.Described) {
	s.filesMu.Lock()
	defer s.filesMu.Unlock()
	s.filesQ = append(s.filesQ, fileRow{path, st, keys, d})
	if len(s.filesQ) == 1 {
		time.AfterFunc(fileFlush, s.flushFiles)
	}
}

// flushFiles writes the remembered files in one transaction. A failure
// costs only the cache: the files are read again at the next start.
// Flushes run one at a time, so Close's flush returns only after a timed
// one already writing has committed.
func (s *Store) flushFiles() {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.filesMu.Lock()
	rows := s.filesQ
	s.filesQ = nil
	s.filesMu.Unlock()
	db := s.db.Load()
	if len(rows) == 0 || db == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		s.log.Warn("store: could not remember file digests; they are read again at the next start", "err", err)
		return
	}
	now := time.Now().Unix()
	// Prepared once per flush, not parsed again for each of a first
	// start's 10,000 rows.
	ins, err := tx.PrepareContext(ctx, `INSERT OR REPLACE INTO files (path, size, mtime_ns, ctime_ns, ino, dev, keys, type, md5, sha256, image, verified, seen)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	for _, r := range rows {
		if err != nil {
			break
		}
		image := ""
		if r.d.Image != nil {
			b, _ := json.Marshal(r.d.Image)
			image = string(b)
		}
		if _, err = ins.ExecContext(ctx,
			r.path, r.st.Size, r.st.ModTime.UnixNano(), r.st.Ctime, int64(r.st.Ino), int64(r.st.Dev), r.keys, string(r.d.Type), r.d.MD5, r.d.SHA256, image, r.d.Verified, now); err != nil {
			break
		}
	}
	if err == nil {
		s.filesKept.Store(true) // before the commit: a Lookup may then ask in vain, never miss a row
		err = tx.Commit()
	} else {
		tx.Rollback()
	}
	if err != nil {
		s.log.Warn("store: could not remember file digests; they are read again at the next start", "err", err)
	}
}

// gzipDir holds the compressed images, each named for its source's SHA-256.
const gzipDir = "gzip"

// LookupGzip returns the compressed form of the image whose SHA-256 is
// source, when one was kept by this encoder and its file is whole.
// A form with no Path says compressing it gains nothing.
func (s *Store) LookupGzip(source string) (catalog.GzipForm, bool) {
	db := s.db.Load()
	if db == nil || !isDigest(source) {
		return catalog.GzipForm{}, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var f catalog.GzipForm
	err := db.QueryRowContext(ctx, `SELECT size, md5, sha256 FROM gzip WHERE source = ? AND encoder = ?`,
		source, catalog.GzipEncoder).Scan(&f.Size, &f.MD5, &f.SHA256)
	if err != nil {
		return catalog.GzipForm{}, false
	}
	if f.Size > 0 {
		f.Path = s.gzipPath(source)
		if !whole(f.Path, f.Size) {
			return catalog.GzipForm{}, false // gone or damaged: compressed again
		}
	}
	return f, true
}

// KeepGzip keeps gz, described by f, as the compressed form of source
// (gz nil: compressing gains nothing) and returns f with its Path: the
// file is written whole (temporary file, fsync, rename) before its row,
// so a row never names a partial file.
func (s *Store) KeepGzip(source string, f catalog.GzipForm, gz []byte) (catalog.GzipForm, error) {
	db := s.db.Load()
	if db == nil {
		return catalog.GzipForm{}, ErrUnavailable
	}
	if !isDigest(source) {
		return catalog.GzipForm{}, fmt.Errorf("store: %q is not a SHA-256", source)
	}
	if gz == nil {
		f = catalog.GzipForm{}
	} else {
		f.Size, f.Path = int64(len(gz)), s.gzipPath(source)
		if err := writeFileAtomic(f.Path, gz); err != nil {
			return catalog.GzipForm{}, fmt.Errorf("store: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, `INSERT OR REPLACE INTO gzip (source, encoder, size, md5, sha256, seen) VALUES (?, ?, ?, ?, ?, ?)`,
		source, catalog.GzipEncoder, f.Size, f.MD5, f.SHA256, s.opts.Now().Unix()); err != nil {
		return catalog.GzipForm{}, fmt.Errorf("store: %w", err)
	}
	return f, nil
}

// PruneGzip deletes the compressed images of sources that are not in
// keep (the SHA-256s of the images the catalog now serves), rows and
// files, so that a folder whose images are replaced every day does not
// grow the data dir by a compressed copy of each one. It returns how many
// it deleted.
func (s *Store) PruneGzip(keep map[string]bool) (int, error) {
	db := s.db.Load()
	if db == nil {
		return 0, ErrUnavailable
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := db.QueryContext(ctx, `SELECT source FROM gzip`)
	if err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	var gone []string
	for rows.Next() {
		var src string
		if rows.Scan(&src) == nil && !keep[src] {
			gone = append(gone, src)
		}
	}
	rows.Close()
	n := 0
	for _, src := range gone {
		if _, err := db.ExecContext(ctx, `DELETE FROM gzip WHERE source = ?`, src); err != nil {
			return n, fmt.Errorf("store: %w", err)
		}
		if err := os.Remove(s.gzipPath(src)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return n, fmt.Errorf("store: %w", err)
		}
		n++
	}
	return n, nil
}

// copyDir holds otabox's own copies of the disk catalog's files, each
// named for its SHA-256: files nothing else writes, so a download can
// hand their pages to the socket (sendfile) and a rewrite of the catalog
// file in place cannot reach it.
const copyDir = "images"

// Copy returns the copy of the file whose SHA-256 is sha, when one was
// kept and it has the given size. A copy is only ever written whole
// (KeepCopy), so its name vouches for its bytes.
func (s *Store) Copy(sha string, size int64) (string, bool) {
	if s.db.Load() == nil || !isDigest(sha) {
		return "", false
	}
	if p := s.copyPath(sha); whole(p, size) {
		return p, true
	}
	return "", false
}

// Copies begins a batch of copies (catalog.CopyBatch): each is written to
// a temporary file as it is added, and Sync makes the whole batch durable
// with one flush of the file system before any of them gets its name.
func (s *Store) Copies() catalog.CopyBatch {
	s.copying.Add(1)
	return &copyBatch{s: s, kept: map[string]string{}, tmp: map[string]string{}}
}

// copyBatch is one catalog load's copies, written by the catalog's copier
// after the load; Add and Sync are safe to call from several goroutines.
type copyBatch struct {
	s    *Store
	mu   sync.Mutex
	kept map[string]string // SHA-256 → the copy, durable (kept before, or synced)
	tmp  map[string]string // SHA-256 → its temporary file, written, not yet durable
	done bool              // synced: no longer counted in Store.copying
}

func (cb *copyBatch) Add(sha string, b []byte) error {
	if cb.s.db.Load() == nil {
		return ErrUnavailable
	}
	if !isDigest(sha) {
		return fmt.Errorf("store: %q is not a SHA-256", sha)
	}
	cb.mu.Lock()
	_, kept := cb.kept[sha]
	_, staged := cb.tmp[sha]
	cb.mu.Unlock()
	if kept || staged {
		return nil // the same bytes under another name
	}
	p := cb.s.copyPath(sha)
	if whole(p, int64(len(b))) {
		cb.mu.Lock()
		cb.kept[sha] = p // kept by an earlier load
		cb.mu.Unlock()
		return nil
	}
	tmp, err := writeTemp(filepath.Dir(p), b)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	cb.mu.Lock()
	defer cb.mu.Unlock()
	if _, dup := cb.tmp[sha]; dup {
		os.Remove(tmp) // another goroutine added the same bytes meanwhile
		return nil
	}
	cb.tmp[sha] = tmp
	return nil
}

// Sync flushes the file system that holds the copies once (syncfs), then
// names each copy and makes the names durable with the folder's fsync.
// Where syncfs fails, each file is fsynced instead.
func (cb *copyBatch) Sync() (map[string]string, error) {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	if !cb.done {
		cb.done = true
		defer cb.s.copying.Add(-1)
	}
	if len(cb.tmp) == 0 {
		return cb.kept, nil
	}
	dir := filepath.Join(cb.s.dir, copyDir)
	err := syncFS(dir)
	if err != nil {
		err = nil
		for sha, tmp := range cb.tmp {
			if ferr := fsyncFile(tmp); ferr != nil {
				os.Remove(tmp)
				delete(cb.tmp, sha)
				err = ferr
			}
		}
	}
	for sha, tmp := range cb.tmp {
		p := cb.s.copyPath(sha)
		if rerr := os.Rename(tmp, p); rerr != nil {
			os.Remove(tmp)
			err = rerr
			continue
		}
		cb.kept[sha] = p
	}
	cb.tmp = map[string]string{}
	if derr := fsyncFile(dir); derr != nil && err == nil {
		err = derr
	}
	if err != nil {
		err = fmt.Errorf("store: copies: %w", err)
	}
	return cb.kept, err
}

// PruneCopies deletes the copies of files whose SHA-256 is not in keep
// (those the catalog now serves), and temporary files a crash left (not
// while a batch of copies is being written: its files look the same), so
// the data dir holds one copy of each served file, not of every version
// it ever held. A download still reading a deleted copy keeps its bytes
// (it holds the file open); a request that finds its copy gone reads the
// catalog file instead. It returns how many copies it deleted.
func (s *Store) PruneCopies(keep map[string]bool) (int, error) {
	if s.db.Load() == nil {
		return 0, ErrUnavailable
	}
	dir := filepath.Join(s.dir, copyDir)
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	n := 0
	for _, de := range des {
		name := de.Name()
		sha, isCopy := strings.CutSuffix(name, ".bin")
		if isCopy && isDigest(sha) && keep[sha] {
			continue
		}
		if !(isCopy && isDigest(sha)) && !strings.HasPrefix(name, ".tmp-") {
			continue // not ours
		}
		if !isCopy && s.copying.Load() > 0 {
			continue // perhaps a batch's, being written: left for a later prune
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return n, fmt.Errorf("store: %w", err)
		}
		if isCopy {
			n++
		}
	}
	return n, nil
}

// whole reports a kept file (written whole, named for its source) that is
// a regular file of the size recorded for it.
func whole(path string, size int64) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Size() == size
}

func (s *Store) copyPath(sha string) string {
	return filepath.Join(s.dir, copyDir, sha+".bin")
}

func (s *Store) gzipPath(source string) string {
	return filepath.Join(s.dir, gzipDir, source+".gz")
}

// isDigest admits only lower-case hex SHA-256s, so a source can never
// name a path outside gzip/.
func isDigest(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// writeFileAtomic writes b to path whole or not at all.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := writeTemp(filepath.Dir(path), b)
	if err != nil {
		return err
	}
	defer os.Remove(tmp) // after a successful rename, a no-op
	if err := fsyncFile(tmp); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// writeTemp writes b to a new temporary file in dir (made if missing),
// readable by the service's group, and returns its path; nothing is
// synced. PruneCopies deletes what a crash leaves.
func writeTemp(dir string, b []byte) (string, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return "", err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(0o640)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// fsyncFile flushes one file (or folder) to the disk.
func fsyncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
