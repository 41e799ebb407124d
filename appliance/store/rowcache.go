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
// row from memory instead of SQLite, and how many devices there are, so
// that a new device is not counted with count(*), a scan of the table.
// (In a profile of downloads from fresh devices, the two row reads and
// the count were 5 % of the server's CPU.)
//
// It is right only while the writer is the one writing, and other writers
// exist: otabox retry, otabox flash --batch, a batch opened from the page.
// So every write transaction runs on one connection held for it and
// begins (BEGIN IMMEDIATE: the newest snapshot) by reading SQLite's
// data_version, which changes when any other connection has committed
// since; then the cache is emptied and the devices counted again. A
// transaction that fails empties it too. It belongs to the writer
// goroutine.
type rowCache struct {
	conn    *sql.Conn
	db      *sql.DB // the database conn belongs to
	version int64   // data_version as of the writer's last commit
	valid   bool    // rows and devices agree with the database
	rows    map[string]*row
	devices int64
}

// txRows is what one write transaction changed of the cache: the rows it
// saved (nil: read it from the database) and the devices it added.
type txRows struct {
	rows  map[string]*row
	added int64
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
	if !c.valid || v != c.version {
		clear(c.rows)
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM devices`).Scan(&c.devices); err != nil {
			tx.Rollback()
			return nil, err
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
	c.devices += t.added
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

// saved notes a row the transaction wrote.
func (w wtx) saved(r *row) {
	if w.rows != nil {
		c := *r
		w.rows.rows[r.MAC] = &c
	}
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
		return w.s.cache.devices + w.rows.added, nil
	}
	var n int64
	err := w.QueryRow(`SELECT count(*) FROM devices`).Scan(&n)
	return n, err
}
