package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The record lives in SQLite's write-ahead log until a checkpoint copies
// it into the database file, and SQLite trusts that log blindly: a WAL
// deleted under a running server, a database file emptied beside its WAL,
// or a WAL with damaged frames loses the transactions in it without a
// word (SQLite deletes the WAL beside an empty database, and stops reading
// a WAL at its first bad frame). So:
//
//   - the writer checkpoints (TRUNCATE) after each quiet second and
//     whenever the WAL passes walCap, so the database file holds the record
//     a second after the last write and a full disk is not taken by the log
//     (with --replicate, Litestream checkpoints instead, past 4 MB and
//     every minute: the record is in the WAL, fsynced, until then);
//   - every writer commit counts itself in the database (the commits
//     table) and, after it returns, in a small file beside it
//     (CommitsFile): at start-up, fewer commits in the database than the
//     file remembers means transactions were lost;
//   - a missing or empty database beside a non-empty WAL is moved aside
//     before SQLite can delete the WAL;
//   - a WAL that is deleted while otabox runs is seen within a second: what
//     SQLite still holds of it is checkpointed and the database reopened.
//
// What is found lost is an ERROR, a banner on the status page and
// otabox_store_healthy 0 until otabox restarts; devices are served
// throughout.

// CommitsFile remembers, beside the database, the database's identity
// and how many commits the writer made to it.
const CommitsFile = "otabox.commits"

// walCap is the WAL size past which the writer checkpoints at once.
const walCap = 4 << 20

// commitsSeen is what CommitsFile says.
type commitsSeen struct {
	id string
	n  int64
}

// CommitsSeen is what a data dir's CommitsFile says of its record: the
// record's identity and the commits the server made to it (ok false
// without one). A restore compares it with the replica's.
func CommitsSeen(dir string) (id string, n int64, ok bool) {
	c, ok := readCommits(filepath.Join(dir, CommitsFile))
	return c.id, c.n, ok
}

// Commits is the record's identity and how many commits it holds.
func (s *Store) Commits(ctx context.Context) (id string, n int64, err error) {
	db, err := s.reader()
	if db == nil {
		return "", 0, err
	}
	err = db.QueryRowContext(ctx, `SELECT id, n FROM commits`).Scan(&id, &n)
	return id, n, err
}

func (s *Store) commitsPath() string { return filepath.Join(s.dir, CommitsFile) }

func readCommits(path string) (commitsSeen, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return commitsSeen{}, false
	}
	id, n, ok := strings.Cut(strings.TrimSpace(string(b)), " ")
	v, err := strconv.ParseInt(strings.TrimSpace(n), 10, 64)
	if !ok || err != nil || id == "" {
		return commitsSeen{}, false
	}
	return commitsSeen{id, v}, true
}

// noteCommit writes n, the writer's commits so far, into CommitsFile. It
// is not synced: it must survive a killed process (the page cache keeps
// it), not a power cut, which loses no committed transaction.
func (s *Store) noteCommit(n int64) {
	s.commitsMu.Lock()
	defer s.commitsMu.Unlock()
	if s.commitsF == nil {
		f, err := os.OpenFile(s.commitsPath(), os.O_RDWR|os.O_CREATE, 0o640)
		if err != nil {
			return
		}
		s.commitsF = f
	}
	// Fixed width, written in place: one pwrite per commit.
	line := fmt.Sprintf("%s %20d\n", s.recordID, n)
	s.commitsF.WriteAt([]byte(line), 0)
}

func (s *Store) closeCommits() {
	s.commitsMu.Lock()
	defer s.commitsMu.Unlock()
	if s.commitsF != nil {
		s.commitsF.Close()
		s.commitsF = nil
	}
}

// preflight looks at the files before SQLite does: a database missing or
// empty beside a WAL that holds frames is moved aside with its WAL (SQLite
// would take the database as new and delete the WAL).
func (s *Store) preflight(path string) {
	wal, err := os.Stat(path + "-wal")
	if err != nil || wal.Size() <= walHeader {
		return
	}
	db, err := os.Stat(path)
	state := "missing"
	switch {
	case err == nil && db.Size() > 0:
		return
	case err == nil:
		state = "empty"
	case !errors.Is(err, fs.ErrNotExist):
		return
	}
	aside := fmt.Sprintf("%s.lost-%s", path, s.opts.Now().UTC().Format("20060102T150405Z"))
	os.Rename(path, aside)
	os.Rename(path+"-wal", aside+"-wal")
	os.Rename(path+"-shm", aside+"-shm")
	s.setLost(fmt.Sprintf("the database file was %s beside a %d-byte WAL, which SQLite would have deleted; both were moved to %s and a fresh record started", state, wal.Size(), aside))
}

// checkCommits compares the commits the database holds with those
// CommitsFile remembers, once the database is open (SQLite has replayed
// what it could of the WAL). It also gives a new record its identity.
func (s *Store) checkCommits(db *sql.DB) error {
	var id string
	var n int64
	if err := db.QueryRow(`SELECT id, n FROM commits`).Scan(&id, &n); err != nil {
		return fmt.Errorf("commits: %w", err)
	}
	if id == "" {
		var b [8]byte
		rand.Read(b[:])
		id = hex.EncodeToString(b[:])
		if _, err := db.Exec(`UPDATE commits SET id = ?`, id); err != nil {
			return fmt.Errorf("commits: %w", err)
		}
	}
	s.recordID, s.commitsN = id, n
	seen, ok := readCommits(s.commitsPath())
	switch {
	case s.Health().Lost != "":
		// Already said (preflight).
	case ok && seen.id == id && seen.n > n:
		s.setLost(fmt.Sprintf("%d of the last %d committed transactions are not in the database: its WAL was deleted, damaged or cut short", seen.n-n, seen.n))
	case ok && seen.id != id:
		s.log.Info("store: "+CommitsFile+" belonged to another record; starting it afresh", "file", s.commitsPath())
	}
	s.noteCommit(n)
	return nil
}

// walHeader is the size of a WAL's header: a WAL no longer than it
// holds no frames.
const walHeader = 32

func (s *Store) setLost(why string) {
	s.faultMu.Lock()
	s.lost = why
	s.faultMu.Unlock()
	s.log.Error("store: part of the fleet record was lost; devices are still served", "reason", why)
}

// rowQuerier is a database or one of its connections.
type rowQuerier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// checkpoint copies the WAL into the database file and truncates it.
func (s *Store) checkpoint(db rowQuerier) error {
	var busy, logFrames, done int
	if err := db.QueryRowContext(context.Background(), `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &logFrames, &done); err != nil {
		return err
	}
	if busy != 0 {
		return errors.New("checkpoint: the database was busy")
	}
	s.checkpoints.Add(1)
	return nil
}

// keepDurable runs on the writer's tick: it checkpoints after a quiet
// second and past walCap, and notices a WAL deleted under it.
func (s *Store) keepDurable(now time.Time) {
	db := s.db.Load()
	if db == nil || s.sinceCheckpoint == 0 {
		return
	}
	path := s.Path()
	fi, err := os.Stat(path + "-wal")
	// Deleted, or deleted and made again: a connection the pool opened
	// since finds no WAL and starts an empty one, while the writer's goes
	// on writing into the deleted file. So the file is known by its
	// identity, taken when the writer's connection first read it
	// (rowCache.wal).
	replaced := err == nil && s.cache.wal != nil && !os.SameFile(s.cache.wal, fi)
	if errors.Is(err, fs.ErrNotExist) || replaced {
		s.log.Error("store: the fleet record's WAL was deleted while otabox runs; saving what SQLite still holds of it into the database and reopening it", "file", path+"-wal")
		// The writer's connection still has the deleted WAL open.
		var q rowQuerier = db
		if s.cache.conn != nil {
			q = s.cache.conn
		}
		if err := s.checkpoint(q); err != nil {
			s.setLost("the WAL was deleted while otabox ran and what SQLite held of it could not be saved: " + err.Error())
		}
		s.reopen()
		return
	}

	if err != nil || s.opts.Replicated {
		// No WAL to look at (not in WAL mode yet, or the data dir went
		// away), or Litestream checkpoints it.
		return
	}
	big := fi.Size() > walCap
	if !big && now.Sub(s.lastCommit) < time.Second {
		return
	}
	start := time.Now()
	if err := s.checkpoint(db); err != nil {
		s.log.Debug("store: checkpoint deferred", "err", err)
		return
	}
	s.log.Debug("store: checkpointed", "commits", s.sinceCheckpoint, "wal_bytes", fi.Size(), "took", time.Since(start).Round(time.Microsecond))
	s.sinceCheckpoint = 0
}

// reopen closes the database and opens it again (a new WAL file).
func (s *Store) reopen() {
	s.cache.release() // the writer's connection goes with its database
	old := s.db.Swap(nil)
	if old != nil {
		old.Close()
	}
	if err := s.open(); err != nil {
		s.setFault(err)
	}
	s.sinceCheckpoint = 0
}
