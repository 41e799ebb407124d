package store

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"sync"
)

// cacheRows bounds the device rows the writer keeps (about 1 KB each):
// past it the cache starts again empty.
const cacheRows = 4096

// rowCache is the writer's memory of the devices table: the rows it last
// wrote, so that a download's end and a device's next request read their
// row from memory instead of SQLite, and which devices there are, so that
// a new device is neither looked for in the table (a query that finds
// nothing) nor counted with count(*), a scan of the table. (In a profile
// of downloads from fresh devices, the row reads and the count were 5 %
// of the server's CPU; in one of listings from fresh devices, the reads
// that found nothing were 12 %; Hold's, 4 % of a download's.)
//
// It is right only while the writer is the one writing, and other writers
// exist: otabox retry, otabox flash --batch, a batch opened from the page.
// So every write transaction runs on one connection held for it and
// begins (BEGIN IMMEDIATE: the newest snapshot) by reading SQLite's
// data_version, which changes when any other connection has committed
// since; then the cache is emptied and the devices' MACs read again. The
// writer's tick looks at data_version too, so that a board another
// process recorded (otabox flash beside the server) is known within a
// second even when the writer has nothing to write. A transaction that
// fails empties the cache too. It belongs to the writer goroutine; known
// is shared with Hold (Store.macs).
type rowCache struct {
	conn    *sql.Conn
	db      *sql.DB // the database conn belongs to
	version int64   // data_version as of the writer's last commit
	valid   bool    // rows and known agree with the database
	rows    map[string]*row
	known   *macSet // every MAC in the devices table, and those being written
	updates map[uint32]string
	// wal is the WAL file (walPath) as conn first read it: a file by that
	// name that is not it was made after it was deleted (keepDurable).
	walPath string
	wal     os.FileInfo
}

// maxUpdates bounds the UPDATE statements kept, one per set of changed
// columns; a set past them updates every column (allColumns).
const maxUpdates = 64

// allColumns is every column but the MAC, as update's changed.
const allColumns = uint32(1<<deviceColumns-1) &^ 1

// update is the statement that sets the columns in changed (bit i:
// deviceNames[i]) of one device, its MAC last; false when it would be one
// statement too many, and the caller sets allColumns instead.
func (c *rowCache) update(changed uint32) (string, bool) {
	if q, ok := c.updates[changed]; ok {
		return q, true
	}
	if c.updates == nil {
		c.updates = map[uint32]string{}
	}
	if len(c.updates) >= maxUpdates && changed != allColumns {
		return "", false
	}
	var set []string
	for i := 1; i < deviceColumns; i++ {
		if changed&(1<<i) != 0 {
			set = append(set, deviceNames[i]+" = ?")
		}
	}
	q := `UPDATE devices SET ` + strings.Join(set, ", ") + ` WHERE mac = ?`
	c.updates[changed] = q
	return q, true
}

// txRows is what one write transaction changed of the cache: the rows it
// saved (nil: read it from the database), and the saved rows not yet
// written to SQLite (dirty, in the order first saved):
// the transaction writes them together, several to a statement, before
// it commits or runs a statement that names the devices table.
type txRows struct {
	rows    map[string]*row
	base    map[string]*row // the rows as the database holds them, where known
	dirty   []string
	isDirty map[string]bool
	err     error // writing what was kept back failed: the transaction fails with it
	// listings are the events of listings from devices, kept back like
	// the dirty rows, to go in listingRows to a statement.
	listings []*Event
}

func newTxRows() *txRows {
	return &txRows{rows: map[string]*row{}, base: map[string]*row{}, isDirty: map[string]bool{}}
}

// begin opens the writer's transaction on its held connection and makes
// the cache agree with the database.
func (c *rowCache) begin(ctx context.Context, db *sql.DB) (*sql.Tx, error) {
	if c.db != db {
		c.release()
		conn, err := db.Conn(ctx)
		if err != nil {
			return nil, err
		}
		c.conn, c.db = conn, db
	}
	tx, err := c.conn.BeginTx(ctx, nil)
	if err != nil {
		c.release() // a broken connection: take another next time
		return nil, err
	}
	var v int64
	if err := tx.QueryRowContext(ctx, `PRAGMA data_version`).Scan(&v); err != nil {
		tx.Rollback()
		return nil, fmt.Errorf("data_version: %w", err)
	}
	if c.wal == nil && c.walPath != "" {
		c.wal, _ = os.Stat(c.walPath) // the connection has it open now
	}
	if !c.valid || v != c.version {
		clear(c.rows)
		if err := c.known.load(ctx, tx); err != nil {
			tx.Rollback()
			return nil, fmt.Errorf("devices: %w", err)
		}
		c.version, c.valid = v, true
	}
	return tx, nil
}

// refresh looks, between transactions, for another connection's commit
// (or a cache a failed transaction left unsure): then the cache is
// emptied and the MACs read again.
func (c *rowCache) refresh(ctx context.Context) {
	if c.conn == nil {
		return
	}
	var v int64
	if err := c.conn.QueryRowContext(ctx, `PRAGMA data_version`).Scan(&v); err != nil || c.valid && v == c.version {
		return
	}
	clear(c.rows)
	if err := c.known.load(ctx, c.conn); err != nil {
		c.valid = false // read again at the next transaction's start
		return
	}
	c.version, c.valid = v, true
}

// committed takes in what a committed transaction wrote.
func (c *rowCache) committed(t *txRows) {
	if c.rows == nil || len(c.rows)+len(t.rows) > cacheRows {
		c.rows = make(map[string]*row, min(len(t.rows), cacheRows))
	}
	for mac, r := range t.rows {
		if r == nil {
			delete(c.rows, mac)
			continue
		}
		c.rows[mac] = r
	}
}

// failed forgets everything: the transaction's writes were rolled back,
// and the rows it read may have been changed in memory.
func (c *rowCache) failed() { c.valid = false }

// release gives the held connection back (the writer's end, or a new
// database): until the next transaction, Hold asks SQLite of every MAC.
func (c *rowCache) release() {
	if c.conn != nil {
		c.conn.Close()
	}
	c.conn, c.db, c.valid, c.wal = nil, nil, false, nil
	c.known.unready()
}

// cached returns mac's row as the writer's transaction sees it: saved in
// this transaction, or in the cache. ok is false when it must be read.
func (w wtx) cached(mac string) (r *row, ok bool) {
	if w.rows == nil {
		return nil, false
	}
	if r, ok := w.rows.rows[mac]; ok {
		if r == nil {
			return nil, false
		}
		c := *r
		return &c, true
	}
	if r, ok := w.s.cache.rows[mac]; ok {
		w.stored(r)
		c := *r
		return &c, true
	}
	return nil, false
}

// stored notes r as the database holds it (read from it, or as the
// writer last committed it), for writeDirty's UPDATE of what changed.
func (w wtx) stored(r *row) {
	if w.rows != nil {
		c := *r
		w.rows.base[r.MAC] = &c
	}
}

// unknown reports whether mac is certainly not in the devices table
// (nor saved by this transaction), so that there is no row to read.
func (w wtx) unknown(mac string) bool {
	if w.rows == nil || !w.s.cache.valid {
		return false
	}
	if _, ok := w.rows.rows[mac]; ok {
		return false
	}
	return !w.s.cache.known.has(mac)
}

// adding notes a device the transaction adds: known from now on, before
// its row is committed, so that Hold never takes a committed device for
// one never seen (a transaction that fails leaves an extra MAC: Hold then
// asks SQLite, as it would anyway).
func (w wtx) adding(mac string) {
	if w.rows == nil {
		return
	}
	w.s.cache.known.add(mac)
}

// saved notes a row the transaction wrote; it reports whether the row is
// still to be written (the writer's transactions write it at their end).
func (w wtx) saved(r *row) (deferred bool) {
	if w.rows == nil {
		return false
	}
	c := *r
	w.rows.rows[r.MAC] = &c
	if !w.rows.isDirty[r.MAC] {
		w.rows.isDirty[r.MAC] = true
		w.rows.dirty = append(w.rows.dirty, r.MAC)
	}
	return true
}

// forget notes a row changed by SQL alone: it must be read again.
func (w wtx) forget(mac string) {
	if w.rows != nil {
		w.rows.rows[mac] = nil
	}
}

// devices is how many devices the table holds, this transaction's
// included.
func (w wtx) devices() (int64, error) {
	if w.rows != nil {
		return int64(w.s.cache.known.len()), nil // this transaction's included (adding)
	}
	var n int64
	err := w.QueryRow(`SELECT count(*) FROM devices`).Scan(&n)
	return n, err
}

// macSet is a set of MACs, safe for concurrent use. Those in the form
// devices send ("5C:CF:7F:12:34:56") are kept as 48-bit numbers: 100,000
// of them take 2.3 MB of heap, against 5.8 MB as strings.
type macSet struct {
	mu    sync.RWMutex
	ready bool // loaded at least once: absent can answer
	nums  map[uint64]struct{}
	other map[string]struct{}
}

// querier is a connection or a transaction.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// load makes s the MACs of the devices table, as q sees it.
func (s *macSet) load(ctx context.Context, q querier) error {
	nums, other := map[uint64]struct{}{}, map[string]struct{}{}
	rows, err := q.QueryContext(ctx, `SELECT mac FROM devices`)
	if err != nil {
		return err
	}
	defer rows.Close()
	var mac []byte
	for rows.Next() {
		if err := rows.Scan(&mac); err != nil {
			return err
		}
		if n, ok := macNumber(string(mac)); ok {
			nums[n] = struct{}{}
		} else {
			other[string(mac)] = struct{}{}
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	s.nums, s.other, s.ready = nums, other, true
	s.mu.Unlock()
	return nil
}

// unready makes absent answer false until the next load.
func (s *macSet) unready() {
	s.mu.Lock()
	s.ready = false
	s.mu.Unlock()
}

func (s *macSet) add(mac string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nums == nil {
		s.nums, s.other = map[uint64]struct{}{}, map[string]struct{}{}
	}
	if n, ok := macNumber(mac); ok {
		s.nums[n] = struct{}{}
		return
	}
	s.other[mac] = struct{}{}
}

func (s *macSet) has(mac string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if n, ok := macNumber(mac); ok {
		_, found := s.nums[n]
		return found
	}
	_, found := s.other[mac]
	return found
}

// absent reports whether mac is certainly not in the devices table: false
// until the set is first loaded.
func (s *macSet) absent(mac string) bool {
	s.mu.RLock()
	ready := s.ready
	s.mu.RUnlock()
	return ready && !s.has(mac)
}

func (s *macSet) len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.nums) + len(s.other)
}

// macNumber is mac as a number when it is six upper-case hex pairs joined
// by colons, the one spelling that maps back to the same string.
func macNumber(mac string) (uint64, bool) {
	if len(mac) != 17 {
		return 0, false
	}
	var n uint64
	for i := 0; i < 17; i++ {
		c := mac[i]
		if i%3 == 2 {
			if c != ':' {
				return 0, false
			}
			continue
		}
		var v byte
		switch {
		case '0' <= c && c <= '9':
			v = c - '0'
		case 'A' <= c && c <= 'F':
			v = c - 'A' + 10
		default:
			return 0, false
		}
		n = n<<4 | uint64(v)
	}
	return n, true
}
