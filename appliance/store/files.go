package store

import (
	"context"
	"encoding/json"
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
	if db == nil {
		return catalog.Described{}, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var d catalog.Described
	var typ, image string
	err := db.QueryRowContext(ctx, `SELECT type, md5, sha256, image, verified FROM files
		WHERE path = ? AND size = ? AND mtime_ns = ? AND ctime_ns = ? AND ino = ? AND dev = ? AND keys = ?`,
		path, st.Size, st.ModTime.UnixNano(), st.Ctime, int64(st.Ino), int64(st.Dev), keys).Scan(&typ, &d.MD5, &d.SHA256, &image, &d.Verified)
	if err != nil {
		return catalog.Described{}, false
	}
	d.Type = catalog.Type(typ)
	if image != "" {
		d.Image = new(espimage.Image)
		if json.Unmarshal([]byte(image), d.Image) != nil {
			return catalog.Described{}, false
		}
	}
	return d, true
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
func (s *Store) flushFiles() {
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
	for _, r := range rows {
		image := ""
		if r.d.Image != nil {
			b, _ := json.Marshal(r.d.Image)
			image = string(b)
		}
		if _, err = tx.ExecContext(ctx, `INSERT OR REPLACE INTO files (path, size, mtime_ns, ctime_ns, ino, dev, keys, type, md5, sha256, image, verified, seen)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			r.path, r.st.Size, r.st.ModTime.UnixNano(), r.st.Ctime, int64(r.st.Ino), int64(r.st.Dev), r.keys, string(r.d.Type), r.d.MD5, r.d.SHA256, image, r.d.Verified, now); err != nil {
			break
		}
	}
	if err == nil {
		err = tx.Commit()
	} else {
		tx.Rollback()
	}
	if err != nil {
		s.log.Warn("store: could not remember file digests; they are read again at the next start", "err", err)
	}
}
