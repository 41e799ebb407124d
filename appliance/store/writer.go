package store

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"
)

// batchMax bounds one group commit; lingerFor is how long listings may
// wait for company.
const (
	batchMax  = 2048
	lingerFor = 100 * time.Millisecond
)

// unwaited reports whether nobody waits for o: a catalog listing, or a
// download's end (its response is over; a check-in that needs it asks
// for it through flush).
func unwaited(o *op) bool { return o.kind == opListing || o.kind == opFinished }

// mayLinger reports whether batch holds only records nobody waits for.
func mayLinger(batch []*op) bool {
	for _, o := range batch {
		if !unwaited(o) {
			return false
		}
	}
	return true
}

// writer is the one goroutine that writes: it takes every queued record,
// applies them in one transaction, commits once (one fsync) and then tells
// each waiting decision its id.
func (s *Store) writer() {
	defer close(s.done)
	defer s.cache.release()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastRetain, lastOpen := s.opts.Now(), s.opts.Now()
	sinceRetain, behind := 0, false
	for {
		var batch []*op
		now := false
		select {
		case o := <-s.queue:
			batch = append(batch, o)
		case <-s.listings.kick: // listings were gathered: commit them below, after the linger
		case <-s.flush: // a check-in waits for a download's end: commit at once
			now = true
		case <-tick.C:
			if s.db.Load() == nil && s.opts.Now().Sub(lastOpen) >= 5*time.Second {
				lastOpen = s.opts.Now()
				if err := s.open(); err == nil {
					s.clearFault()
				}
			}
			if behind || s.opts.Now().Sub(lastRetain) >= time.Minute {
				lastRetain, sinceRetain = s.opts.Now(), 0
				behind = s.retain()
			}
			s.keepDurable(s.opts.Now())
			s.cache.refresh(context.Background())
			continue
		case <-s.stop:
			for {
				select {
				case o := <-s.queue:
					batch = append(batch, o)
					if len(batch) == batchMax {
						s.commit(batch)
						batch = batch[:0]
					}
					continue
				default:
				}
				break
			}
			s.commit(batch) // and the listings still gathered
			return
		}
	more:
		for len(batch) < batchMax {
			select {
			case o := <-s.queue:
				batch = append(batch, o)
			default:
				break more
			}
		}
		// Nobody waits on listings or on a download's end: let them gather
		// for a moment, so that a catalog flood costs a commit per hundred
		// milliseconds instead of one per handful of requests, and a
		// download costs one commit (its decision's, which takes the ends
		// queued before it) instead of two. A decision arriving meanwhile
		// is committed at once, with them; so are they when a check-in
		// waits for a download's end (flush). (Listings without a MAC
		// gather in s.listings, not the queue.)
		if !now && mayLinger(batch) {
			linger := time.NewTimer(s.opts.linger)
		gather:
			for len(batch) < batchMax {
				select {
				case o := <-s.queue:
					batch = append(batch, o)
					if !unwaited(o) {
						break gather
					}
				case <-linger.C:
					break gather
				case <-s.listings.kick: // batchMax listings gathered: commit them now
					break gather
				case <-s.flush:
					break gather
				case <-s.stop:
					break gather
				}
			}
			linger.Stop()
		}
		s.commit(batch)
		if sinceRetain += len(batch); sinceRetain >= 10_000 {
			lastRetain, sinceRetain = s.opts.Now(), 0
			behind = s.retain()
		}
	}
}

// commit applies batch in one transaction. When it cannot be written,
// every record in it is dropped and counted; the next batch tries again.
func (s *Store) commit(batch []*op) {
	listings, requests := s.listings.take()
	requests += int64(len(batch))
	if requests == 0 {
		return
	}
	ids := make([]int64, len(batch))
	var n int64 // the writer's commits, this one included
	err := s.inTx(func(tx wtx) error {
		// The gathered listings (no device to fold into) go in as
		// multi-row INSERTs: a catalog flood costs a fraction per row.
		if err := s.insertListings(tx, listings); err != nil {
			return err
		}
		for i, o := range batch {
			id, err := s.apply(tx, o)
			if err != nil {
				return err
			}
			ids[i] = id
		}
		return tx.QueryRow(`UPDATE commits SET n = n + 1 RETURNING n`).Scan(&n)
	})
	if err != nil {
		s.drop(int(requests), err)
		for _, o := range batch {
			if o.id != nil {
				o.id <- -1
			}
		}
		return
	}
	s.written.Add(requests)
	s.commits.Add(1)
	s.commitsN, s.lastCommit = n, s.opts.Now()
	s.sinceCheckpoint++
	s.noteCommit(n)
	s.clearFault()
	for i, o := range batch {
		if o.id != nil {
			o.id <- ids[i]
		}
	}
}

// inTx runs f in one write transaction of the writer's, on its held
// connection, with its row cache (rowCache).
func (s *Store) inTx(f func(wtx) error) error {
	db := s.db.Load()
	if db == nil {
		return ErrUnavailable
	}
	t := newTxRows()
	if err := s.runTx(db, s.cache.begin, t, f); err != nil {
		s.cache.failed()
		return err
	}
	s.cache.committed(t)
	return nil
}

// withTx runs f in one write transaction on db, without the writer's
// cache (a batch opened, boards flashed, a ledger imported).
func (s *Store) withTx(db *sql.DB, f func(wtx) error) error {
	begin := func(ctx context.Context, db *sql.DB) (*sql.Tx, error) { return db.BeginTx(ctx, nil) }
	return s.runTx(db, begin, nil, f)
}

// runTx runs f in the transaction begin opens on db, rolled back when f
// fails; rows is the writer's record of what it changed (nil elsewhere).
func (s *Store) runTx(db *sql.DB, begin func(context.Context, *sql.DB) (*sql.Tx, error), rows *txRows, f func(wtx) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tx, err := begin(ctx, db)
	if err != nil {
		return err
	}
	w := wtx{s: s, db: db, tx: tx, rows: rows}
	if err := f(w); err != nil {
		tx.Rollback()
		return err
	}
	if err := w.writeKept(); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// wtx is a write transaction whose statements are prepared once per
// database and reused: parsing SQL was most of an insert's cost.
type wtx struct {
	s    *Store
	db   *sql.DB
	tx   *sql.Tx
	rows *txRows // the writer's: what this transaction changed of s.cache; nil elsewhere
}

func (w wtx) stmt(query string) (*sql.Stmt, error) { return w.s.prepared(w.db, query) }

// prepared returns query prepared on db, once per database: the writer's
// statements, and the queries asked once per file at start-up.
func (s *Store) prepared(db *sql.DB, query string) (*sql.Stmt, error) {
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	if s.stmtDB != db {
		for _, st := range s.stmts {
			st.Close()
		}
		s.stmts, s.stmtDB = map[string]*sql.Stmt{}, db
	}
	if st, ok := s.stmts[query]; ok {
		return st, nil
	}
	st, err := db.Prepare(query)
	if err != nil {
		return nil, err
	}
	s.stmts[query] = st
	return st, nil
}

// Exec runs query in the transaction, after writing what the writer's
// transaction has kept back (device rows, listings) of the tables query
// names, so that it sees them.
func (w wtx) Exec(query string, args ...any) (sql.Result, error) {
	if err := w.writeBefore(query); err != nil {
		return nil, err
	}
	return w.exec(query, args...)
}

func (w wtx) exec(query string, args ...any) (sql.Result, error) {
	st, err := w.stmt(query)
	if err != nil {
		return nil, err
	}
	return w.tx.Stmt(st).Exec(args...)
}

// QueryRow is Exec's query of one row.
func (w wtx) QueryRow(query string, args ...any) *sql.Row {
	w.writeBefore(query) // a failure is kept: the transaction ends with it (runTx)
	return w.queryRow(query, args...)
}

func (w wtx) queryRow(query string, args ...any) *sql.Row {
	st, err := w.stmt(query)
	if err != nil {
		return w.tx.QueryRow(query, args...) // reports the same error through Scan
	}
	return w.tx.Stmt(st).QueryRow(args...)
}

// writeBefore writes the kept-back rows of the tables query names.
func (w wtx) writeBefore(query string) error {
	if w.rows == nil {
		return nil
	}
	if w.rows.err != nil {
		return w.rows.err
	}
	if len(w.rows.listings) > 0 && names(query, "events") {
		if err := w.writeListings(); err != nil {
			return err
		}
	}
	if len(w.rows.dirty) > 0 && names(query, "devices") {
		return w.writeDirty()
	}
	return nil
}

// writeKept writes everything the transaction kept back, before its
// commit.
func (w wtx) writeKept() error {
	if w.rows != nil && w.rows.err != nil {
		return w.rows.err
	}
	if err := w.writeListings(); err != nil {
		return err
	}
	return w.writeDirty()
}

// names reports whether query names table as a word (devices, not
// batch_devices).
func names(query, table string) bool {
	word := func(c byte) bool {
		return c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
	}
	for i := 0; ; {
		j := strings.Index(query[i:], table)
		if j < 0 {
			return false
		}
		j += i
		end := j + len(table)
		if (j == 0 || !word(query[j-1])) && (end == len(query) || !word(query[end])) {
			return true
		}
		i = end
	}
}

func (s *Store) apply(tx wtx, o *op) (int64, error) {
	switch o.kind {
	case opDecided, opListing:
		return s.insert(tx, o.ev, o.kind == opDecided)
	case opFinished:
		return 0, s.finish(tx, o.ev)
	case opRetry:
		// The id says whether there was a hold or a failure count to clear.
		res, err := tx.Exec(`UPDATE devices SET failures = 0, held_until = 0 WHERE mac = ? AND (failures != 0 OR held_until != 0)`, o.mac)
		if err != nil {
			return 0, err
		}
		tx.forget(o.mac)
		n, _ := res.RowsAffected()
		return n, nil
	}
	return 0, errors.New("store: unknown record kind")
}

func ms(t time.Time) int64 { return t.UnixMilli() }

// listingRows is how many listings one multi-row INSERT takes.
const listingRows = 32

const eventInsertCols = `time, client, mac, family, method, endpoint, target, decision, status, reason,
		image, digest, running, sdk, free_space, chip_size, bytes, size, completed, finished, took_ms, repeats`

// eventRow is one row's placeholders, in eventInsertCols order.
const eventRow = "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"

// listingInsert is the INSERT of listingRows events at once.
var listingInsert = "INSERT INTO events (" + eventInsertCols + ") VALUES " + strings.TrimSuffix(strings.Repeat(eventRow+",", listingRows), ",")

// insertListings writes listings, listingRows to a statement and the
// rest one by one.
func (s *Store) insertListings(tx wtx, evs []*Event) error {
	args := make([]any, 0, 22*min(len(evs), listingRows))
	for len(evs) > 0 {
		n, query := listingRows, listingInsert
		if len(evs) < listingRows {
			n, query = 1, `INSERT INTO events (`+eventInsertCols+`) VALUES `+eventRow
		}
		args = args[:0]
		for _, ev := range evs[:n] {
			args = append(args, ms(ev.Time), ev.Client, ev.MAC, ev.Family, ev.Method, ev.Endpoint, ev.Target, ev.Decision, ev.Status, ev.Reason,
				ev.Image, ev.Digest, ev.Running, ev.SDK, ev.FreeSpace, ev.ChipSize, ev.Bytes, ev.Size, b2i(ev.Completed), 1, ev.Took, max(ev.Repeats, 1))
		}
		if _, err := tx.exec(query, args...); err != nil {
			return err
		}
		evs = evs[n:]
	}
	return nil
}

// writeListings writes the listings from devices the writer's
// transaction kept back (insert).
func (w wtx) writeListings() error {
	if w.rows == nil || len(w.rows.listings) == 0 {
		return nil
	}
	evs := w.rows.listings
	w.rows.listings = nil
	if err := w.s.insertListings(w, evs); err != nil {
		w.rows.err = err // the transaction fails with it (runTx)
		return err
	}
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// insert writes one event and folds it into its device.
func (s *Store) insert(tx wtx, ev *Event, decided bool) (int64, error) {
	var id int64
	if !decided && tx.rows != nil {
		// A listing's id is nobody's: it waits to go in with the others,
		// listingRows to a statement (writeListings).
		tx.rows.listings = append(tx.rows.listings, ev)
	} else {
		finished := !(decided && ev.Decision == "serve")
		res, err := tx.Exec(`INSERT INTO events (`+eventInsertCols+`) VALUES `+eventRow,
			ms(ev.Time), ev.Client, ev.MAC, ev.Family, ev.Method, ev.Endpoint, ev.Target, ev.Decision, ev.Status, ev.Reason,
			ev.Image, ev.Digest, ev.Running, ev.SDK, ev.FreeSpace, ev.ChipSize, ev.Bytes, ev.Size, b2i(ev.Completed), b2i(finished), ev.Took, max(ev.Repeats, 1))
		if err != nil {
			return 0, err
		}
		if id, err = res.LastInsertId(); err != nil {
			return 0, err
		}
	}
	if ev.MAC == "" {
		return id, nil // a listing carries no identity: nothing to attach it to
	}
	if decided {
		if err := s.foldBatch(tx, ev, false); err != nil {
			return 0, err
		}
	}
	d, found, err := loadDevice(tx, ev.MAC)
	if err != nil {
		return 0, err
	}
	if !found {
		n, err := tx.devices()
		if err != nil {
			return 0, err
		}
		if n >= s.opts.MaxDevices {
			s.truncated.Add(1)
			return id, nil // the event is kept; the fleet table does not grow past its bound
		}
		d = &row{Device: Device{MAC: ev.MAC, FirstSeen: ev.Time}}
		tx.adding(ev.MAC)
	}
	was := d.State
	s.fold(d, ev, id, decided)
	if d.State == StateConfirmed && was != StateConfirmed && ev.Batch == nil {
		// Confirmed after its batch closed (no open batch asked about it):
		// the batch's row says so too, and when.
		if _, err := tx.Exec(`UPDATE batch_devices SET result = ?, reason = ?, after_md5 = ?, ended = ?
			WHERE mac = ? AND result IN (?, ?, ?, ?) AND batch IN (SELECT name FROM batches WHERE closed != 0 AND image = ?)`,
			ResultConfirmed, "confirmed after the batch closed", ev.Digest, ms(ev.Time),
			d.MAC, ResultWaiting, ResultFailed, ResultCutOff, ResultFlashed, d.Sent); err != nil {
			return 0, err
		}
	}
	return id, saveDevice(tx, d)
}

// fold applies one request to what is known of its device: where it was
// seen, and what its check-in says about the last update.
func (s *Store) fold(d *row, ev *Event, id int64, decided bool) {
	d.IP, d.Requests = ev.Client, d.Requests+1
	if ev.Time.After(d.LastSeen) {
		d.LastSeen = ev.Time
	}
	if ev.Family != "" {
		d.Family = ev.Family
	}
	if ev.Chip != "" {
		d.Chip = ev.Chip
	}
	if ev.SDK != "" {
		d.SDK = ev.SDK
	}
	if ev.Method == "HEAD" {
		return // a HEAD downloads nothing: it never changes an update's state
	}
	if ev.Digest != "" {
		s.checkIn(d, ev)
	}
	if !decided {
		return
	}
	d.Decision, d.Reason = ev.Decision, ev.Reason
	if ev.Decision == "serve" {
		d.pendingEvent, d.pendingImage, d.pendingDigests, d.pendingPrev, d.pendingFS = id, ev.Image, ev.ImageDigests, ev.Digest, false
		if ev.FSDigest != "" {
			d.pendingDigests, d.pendingPrev, d.pendingFS = []string{ev.FSDigest}, "", true
		}
	}
}

// HoldBackAfter is how many failed attempts hold an image back.
const HoldBackAfter = 2

// BackOff is how long the failures-th consecutive failure of one image
// holds it back from the device: 1 h, 4 h, then 24 h each time.
func BackOff(failures int) time.Duration {
	steps := []time.Duration{time.Hour, 4 * time.Hour, 24 * time.Hour}
	return steps[min(max(failures-HoldBackAfter, 0), len(steps)-1)]
}

// checkIn reads a device's report of what it runs against the last update
// it was sent (the state machine: next).
func (s *Store) checkIn(d *row, ev *Event) {
	next(d.State, classify(&d.Device, ev.Digest)).apply(&d.Device, ev.Time)
	d.Digest, d.Running = ev.Digest, ev.Running
}

// finish records how a download's response ended.
func (s *Store) finish(tx wtx, ev *Event) error {
	if _, err := tx.Exec(`UPDATE events SET bytes = ?, completed = ?, finished = 1, took_ms = ?,
		reason = CASE WHEN ? = '' THEN reason ELSE ? END WHERE id = ?`,
		ev.Bytes, b2i(ev.Completed), ev.Took, ev.Reason, ev.Reason, ev.ID); err != nil {
		return err
	}
	if ev.MAC == "" {
		return nil
	}
	if err := s.foldBatch(tx, ev, true); err != nil {
		return err
	}
	d, found, err := loadDevice(tx, ev.MAC)
	if err != nil || !found || d.pendingEvent != ev.ID {
		return err
	}
	switch {
	case d.pendingFS:
		// A filesystem image is not the device's firmware: its update
		// state, hold-back and failures are about its sketch. Only an
		// image sent whole is remembered as the device's.
		if ev.Completed && ev.Method != "HEAD" {
			d.Filesystem, d.FilesystemAt, d.Downloads = d.pendingImage, ev.Time, d.Downloads+1
			if len(d.pendingDigests) > 0 {
				d.FilesystemSHA256 = d.pendingDigests[0]
			}
		}
	case ev.Bytes > 0 && ev.Method != "HEAD":
		if d.Sent != d.pendingImage {
			d.Failures, d.HeldUntil = 0, time.Time{} // a new image starts its own count
		}
		d.Sent, d.SentDigests, d.PrevDigest, d.SentAt = d.pendingImage, d.pendingDigests, d.pendingPrev, ev.Time
		d.Downloads++
		if ev.Completed {
			next(d.State, sentWhole).apply(&d.Device, ev.Time)
		} else {
			next(d.State, cutOff).apply(&d.Device, ev.Time)
			d.Reason = ev.Reason
		}
	}
	d.pendingEvent, d.pendingImage, d.pendingDigests, d.pendingPrev, d.pendingFS = 0, "", nil, "", false
	return saveDevice(tx, d)
}

// interrupted is the reason given to a download whose end a stop kept
// from being recorded.
const interrupted = "interrupted: otabox stopped before the download's end was recorded"

// recoverUnfinished closes out downloads that were running when the last
// process died: the device may have received part of the image, so it is
// recorded as cut off.
func (s *Store) recoverUnfinished(db *sql.DB) (int64, error) {
	var n int64
	err := func() error {
		tx, err := db.Begin()
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if _, err := tx.Exec(`UPDATE devices SET state = ?, sent = pending_image, sent_digests = pending_digests,
			prev_digest = pending_prev, sent_at = last_seen, downloads = downloads + 1, reason = ?,
			pending_event = 0, pending_image = '', pending_digests = '', pending_prev = ''
			WHERE pending_event != 0 AND pending_fs = 0`, StateCut, interrupted); err != nil {
			return err
		}
		// A filesystem image cut off by the stop is not the device's.
		if _, err := tx.Exec(`UPDATE devices SET pending_event = 0, pending_image = '', pending_digests = '', pending_prev = '', pending_fs = 0
			WHERE pending_event != 0`); err != nil {
			return err
		}
		if _, err := tx.Exec(`UPDATE batch_devices SET result = ?, reason = ?, ended = last_seen WHERE result = ?`,
			ResultCutOff, interrupted, ResultInProgress); err != nil {
			return err
		}
		res, err := tx.Exec(`UPDATE events SET finished = 1, reason = ? WHERE finished = 0`, interrupted)
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		return tx.Commit()
	}()
	return n, err
}

// retain deletes the oldest events past KeepEvents or KeepAge, a few
// thousand rows per transaction and a few transactions per call, so that
// devices never wait long behind it. It reports whether more is left.
func (s *Store) retain() (more bool) {
	db := s.db.Load()
	if db == nil {
		return false
	}
	const step = 5000
	cutoff := ms(s.opts.Now().Add(-s.opts.KeepAge))
	for i := 0; i < 8; i++ {
		var lo, hi sql.NullInt64
		if err := db.QueryRow(`SELECT min(id), max(id) FROM events`).Scan(&lo, &hi); err != nil || !lo.Valid {
			return false
		}
		var oldest int64
		db.QueryRow(`SELECT time FROM events WHERE id = ?`, lo.Int64).Scan(&oldest)
		var query string
		var args []any
		switch {
		case hi.Int64-lo.Int64+1 > s.opts.KeepEvents: // ids are dense: min..max counts the rows
			query, args = `DELETE FROM events WHERE id < ?`, []any{min(lo.Int64+step, hi.Int64-s.opts.KeepEvents+1)}
		case oldest < cutoff:
			query, args = `DELETE FROM events WHERE id < ? AND time < ?`, []any{lo.Int64 + step, cutoff}
		default:
			return false
		}
		err := s.inTx(func(tx wtx) error {
			_, err := tx.Exec(query, args...)
			return err
		})
		if err != nil {
			s.log.Warn("store: retention failed; will try again", "err", err)
			return false
		}
	}
	return true
}
