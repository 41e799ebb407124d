package store

import (
	"context"
	"database/sql"
	"fmt"
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
// that found nothing were 12 %.)
//
// It is right only while the writer is the one writing, and other writers
// exist: otabox retry, otabox flash --batch, a batch opened from the page.
// So every write transaction runs on one connection held for it and
// begins (BEGIN IMMEDIATE: the newest snapshot) by reading SQLite's
// data_version, which changes when any other connection has committed
// since; then the cache is emptied and the devices' MACs read again. A
// transaction that fails empties it too. It belongs to the writer
// goroutine.
type rowCache struct {
	conn    *sql.Conn
	db      *sql.DB // the database conn belongs to
	version int64   // data_version as of the writer's last commit
	valid   bool    // rows and known agree with the database
	rows    map[string]*row
	known   macSet // every MAC in the devices table
}

// txRows is what one write transaction changed of the cache: the rows it
// saved (nil: read it from the database), the devices it added, and the
// saved rows not yet written to SQLite (dirty, in the order first saved):
// the transaction writes them together, several to a statement, before
// it commits or runs a statement that names the devices table.
type txRows struct {
	rows    map[string]*row
	added   []string
	dirty   []string
	isDirty map[string]bool
	err     error // writing the dirty rows failed: the transaction fails with it
}

func newTxRows() *txRows { return &txRows{rows: map[string]*row{}, isDirty: map[string]bool{}} }

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
	for _, mac := range t.added {
		c.known.add(mac)
	}
}

// failed forgets everything: the transaction's writes were rolled back,
// and the rows it read may have been changed in memory.
func (c *rowCache) failed() { c.valid = false }

// release gives the held connection back (the writer's end, or a new
// database).
func (c *rowCache) release() {
	if c.conn != nil {
		c.conn.Close()
	}
	c.conn, c.db, c.valid = nil, nil, false
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
		c := *r
		return &c, true
	}
	return nil, false
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
		return int64(w.s.cache.known.len() + len(w.rows.added)), nil
	}
	var n int64
	err := w.QueryRow(`SELECT count(*) FROM devices`).Scan(&n)
	return n, err
}

// macSet is a set of MACs. Those in the form devices send
// ("5C:CF:7F:12:34:56") are kept as 48-bit numbers: 100,000 of them
// take 2.3 MB of heap, against 5.8 MB as strings.
type macSet struct {
	nums  map[uint64]struct{}
	other map[string]struct{}
}

// load makes s the MACs of the devices table, as tx sees it.
func (s *macSet) load(ctx context.Context, tx *sql.Tx) error {
	s.nums, s.other = map[uint64]struct{}{}, map[string]struct{}{}
	rows, err := tx.QueryContext(ctx, `SELECT mac FROM devices`)
	if err != nil {
		return err
	}
	defer rows.Close()
	var mac []byte // RawBytes would do, but a string is what add keeps for odd MACs
	for rows.Next() {
		if err := rows.Scan(&mac); err != nil {
			return err
		}
		s.add(string(mac))
	}
	return rows.Err()
}

func (s *macSet) add(mac string) {
	if n, ok := macNumber(mac); ok {
		s.nums[n] = struct{}{}
		return
	}
	s.other[mac] = struct{}{}
}

func (s *macSet) has(mac string) bool {
	if n, ok := macNumber(mac); ok {
		_, found := s.nums[n]
		return found
	}
	_, found := s.other[mac]
	return found
}

func (s *macSet) len() int { return len(s.nums) + len(s.other) }

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
