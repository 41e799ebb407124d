package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// row is a device as stored, with the download still being decided.
type row struct {
	Device
	pendingEvent   int64
	pendingImage   string
	pendingDigests []string
	pendingPrev    string
	pendingFS      bool // the pending download is a filesystem image (pendingDigests: its SHA-256)
}

const deviceCols = `mac, family, chip, ip, first_seen, last_seen, running, digest, sdk, decision, reason, state,
	sent, sent_digests, prev_digest, sent_at, requests, downloads, failures, held_until,
	pending_event, pending_image, pending_digests, pending_prev, fs_image, fs_sha256, fs_at, pending_fs`

type scanner interface{ Scan(...any) error }

func scanDevice(sc scanner) (*row, error) {
	var r row
	var first, last, held, sentAt, fsAt int64
	var sent, pending string
	if err := sc.Scan(&r.MAC, &r.Family, &r.Chip, &r.IP, &first, &last, &r.Running, &r.Digest, &r.SDK, &r.Decision, &r.Reason, &r.State,
		&r.Sent, &sent, &r.PrevDigest, &sentAt, &r.Requests, &r.Downloads, &r.Failures, &held,
		&r.pendingEvent, &r.pendingImage, &pending, &r.pendingPrev, &r.Filesystem, &r.FilesystemSHA256, &fsAt, &r.pendingFS); err != nil {
		return nil, err
	}
	if fsAt > 0 {
		r.FilesystemAt = time.UnixMilli(fsAt).UTC()
	}
	r.FirstSeen, r.LastSeen = time.UnixMilli(first).UTC(), time.UnixMilli(last).UTC()
	if held > 0 {
		r.HeldUntil = time.UnixMilli(held).UTC()
	}
	if sentAt > 0 {
		r.SentAt = time.UnixMilli(sentAt).UTC()
	}
	r.SentDigests, r.pendingDigests = strings.Fields(sent), strings.Fields(pending)
	if r.pendingEvent != 0 {
		r.Downloading = r.pendingImage
	}
	return &r, nil
}

func loadDevice(tx wtx, mac string) (*row, bool, error) {
	if r, ok := tx.cached(mac); ok {
		return r, true, nil
	}
	if tx.unknown(mac) {
		return nil, false, nil
	}
	// A row saved in this transaction is cached: the table need not hold
	// the dirty rows for this read (queryRow, not QueryRow).
	r, err := scanDevice(tx.queryRow(`SELECT `+deviceCols+` FROM devices WHERE mac = ?`, mac))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err == nil {
		tx.stored(r)
	}
	return r, err == nil, err
}

// deviceUpsert is the statement that writes n device rows: an upsert,
// which leaves alone the index entries of columns that did not change
// (INSERT OR REPLACE deleted the row and wrote it and its three index
// entries again).
func deviceUpsert(n int) string {
	set := make([]string, 0, deviceColumns)
	for _, c := range deviceNames[1:] {
		set = append(set, c+" = excluded."+c)
	}
	one := "(" + strings.TrimSuffix(strings.Repeat("?,", deviceColumns), ",") + ")"
	return `INSERT INTO devices (` + deviceCols + `) VALUES ` + strings.TrimSuffix(strings.Repeat(one+",", n), ",") +
		` ON CONFLICT(mac) DO UPDATE SET ` + strings.Join(set, ", ")
}

// upsertRows is how many device rows one statement writes; upserts holds
// the statements for 1..upsertRows rows.
const upsertRows = 16

var upserts = func() (q [upsertRows + 1]string) {
	for n := 1; n <= upsertRows; n++ {
		q[n] = deviceUpsert(n)
	}
	return q
}()

// saveDevice writes a device's row: at once outside the writer, and with
// the transaction's other rows, at its end, in the writer (writeDirty).
func saveDevice(tx wtx, r *row) error {
	if tx.saved(r) {
		return nil
	}
	return writeDevices(tx, []*row{r})
}

// writeDirty writes the rows the writer's transaction saved and has not
// written yet: a new device's row with the others', upsertRows to a
// statement; a known device's columns that changed, in an UPDATE of those
// alone, which leaves alone the index entries of the others (a device's
// request changes its last_seen, seldom its state or what it was sent).
func (w wtx) writeDirty() error {
	if w.rows == nil {
		return nil
	}
	if w.rows.err != nil {
		return w.rows.err
	}
	var fresh []*row
	for _, mac := range w.rows.dirty {
		r := w.rows.rows[mac]
		if r == nil {
			continue
		}
		if base, ok := w.rows.base[mac]; ok {
			if err := updateDevice(w, base, r); err != nil {
				w.rows.err = err
				return err
			}
		} else {
			fresh = append(fresh, r)
		}
		c := *r
		w.rows.base[mac] = &c
	}
	w.rows.dirty = w.rows.dirty[:0]
	clear(w.rows.isDirty)
	if err := writeDevices(w, fresh); err != nil {
		w.rows.err = err
		return err
	}
	return nil
}

// deviceColumns is how many columns deviceCols names.
const deviceColumns = 28

// deviceNames is deviceCols, one name each.
var deviceNames = strings.Fields(strings.ReplaceAll(deviceCols, ",", " "))

// deviceValues is r's row as stored, in deviceCols order.
func deviceValues(r *row) [deviceColumns]any {
	held, sentAt, fsAt := int64(0), int64(0), int64(0)
	if !r.HeldUntil.IsZero() {
		held = ms(r.HeldUntil)
	}
	if !r.SentAt.IsZero() {
		sentAt = ms(r.SentAt)
	}
	if !r.FilesystemAt.IsZero() {
		fsAt = ms(r.FilesystemAt)
	}
	return [deviceColumns]any{
		r.MAC, r.Family, r.Chip, r.IP, ms(r.FirstSeen), ms(r.LastSeen), r.Running, r.Digest, r.SDK, r.Decision, r.Reason, r.State,
		r.Sent, strings.Join(r.SentDigests, " "), r.PrevDigest, sentAt, r.Requests, r.Downloads, r.Failures, held,
		r.pendingEvent, r.pendingImage, strings.Join(r.pendingDigests, " "), r.pendingPrev, r.Filesystem, r.FilesystemSHA256, fsAt, b2i(r.pendingFS)}
}

// updateDevice writes the columns of r that differ from base, the row as
// the database holds it.
func updateDevice(tx wtx, base, r *row) error {
	was, now := deviceValues(base), deviceValues(r)
	var changed uint32
	args := make([]any, 0, deviceColumns)
	for i := 1; i < deviceColumns; i++ { // 0 is the MAC
		if was[i] != now[i] {
			changed |= 1 << i
			args = append(args, now[i])
		}
	}
	if changed == 0 {
		return nil
	}
	q, ok := tx.s.cache.update(changed)
	if !ok {
		q, _ = tx.s.cache.update(allColumns)
		args = append(args[:0], now[1:]...)
	}
	_, err := tx.exec(q, append(args, r.MAC)...)
	return err
}

// writeDevices writes rows, new or not, upsertRows to a statement.
func writeDevices(tx wtx, rows []*row) error {
	args := make([]any, 0, deviceColumns*min(len(rows), upsertRows))
	for len(rows) > 0 {
		n := min(len(rows), upsertRows)
		args = args[:0]
		for _, r := range rows[:n] {
			v := deviceValues(r)
			args = append(args, v[:]...)
		}
		if _, err := tx.exec(upserts[n], args...); err != nil {
			return err
		}
		rows = rows[n:]
	}
	return nil
}

// OpenReader opens the store in dir for reading only (`otabox devices`,
// `otabox history`), next to a server that may be writing it. It never
// creates, imports or repairs anything.
func OpenReader(dir string) (*Store, error) {
	path := filepath.Join(dir, FileName)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("no fleet record in %s: %w", dir, err)
	}
	db, err := openExisting(path, true)
	if err != nil {
		return nil, err
	}
	s := &Store{dir: dir, log: slog.New(slog.DiscardHandler), done: make(chan struct{}), stop: make(chan struct{})}
	close(s.done)
	s.db.Store(db)
	s.opts.Now = time.Now
	return s, nil
}

// openExisting opens the database at path from outside the server,
// refusing one at another schema version than this build's.
func openExisting(path string, readOnly bool) (*sql.DB, error) {
	db, err := sql.Open("sqlite", dsn(path, readOnly))
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	var v int
	if err := db.QueryRow(`SELECT version FROM schema_version`).Scan(&v); err != nil {
		db.Close()
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	if v != SchemaVersion {
		db.Close()
		return nil, fmt.Errorf("store %s has schema version %d; this otabox uses %d (start the server once to migrate it)", path, v, SchemaVersion)
	}
	return db, nil
}

// DeviceFilter selects devices; the zero value is every device, most
// recently seen first, at most 1,000.
type DeviceFilter struct {
	State  string // "" for all; "none" for devices never sent an image; "problem" (see problemSQL)
	MAC    string // a MAC or a prefix ending in '*'
	Limit  int
	Offset int
	// ProblemsFirst lists the devices that need a technician (problemSQL)
	// before the rest, each part most recently seen first.
	ProblemsFirst bool
}

// problemSQL selects the devices that need a technician: an update that
// failed or was cut off, an image held back, or a last request refused.
const problemSQL = "(state IN ('failed', 'cut-off') OR held_until > ? OR decision = 'refuse')"

// ErrBadFilter is a device or event filter otabox cannot answer: an
// unknown state, a string that is no MAC. Callers say so (400, exit 2)
// rather than answer an empty list.
var ErrBadFilter = errors.New("bad filter")

// States are the update states a filter may name.
var States = []string{StateSent, StateCut, StateConfirmed, StateFailed, "none", "held", "problem"}

// Check refuses a filter naming an unknown state or a malformed MAC, and
// writes the MAC as the record keeps it (5C:CF:7F:12:34:56, also from
// 5c-cf-7f-12-34-56 or 5ccf7f123456; a prefix ending in * as given).
func (f *DeviceFilter) Check() error {
	if f.State != "" && !slices.Contains(States, f.State) {
		return fmt.Errorf("%w: unknown state %q (%s)", ErrBadFilter, f.State, strings.Join(States, ", "))
	}
	if f.MAC != "" && !strings.HasSuffix(f.MAC, "*") {
		m, err := NormalizeMAC(f.MAC)
		if err != nil {
			return err
		}
		f.MAC = m
	}
	return nil
}

// NormalizeMAC writes a MAC as the record keeps it: upper case, colons.
// It takes colons, dashes or no separators.
func NormalizeMAC(s string) (string, error) {
	h := strings.NewReplacer(":", "", "-", "", ".", "").Replace(strings.TrimSpace(s))
	if len(h) != 12 {
		return "", fmt.Errorf("%w: %q is not a MAC (like 5C:CF:7F:12:34:56)", ErrBadFilter, s)
	}
	out := make([]string, 6)
	for i := range out {
		b := h[2*i : 2*i+2]
		if _, err := strconv.ParseUint(b, 16, 8); err != nil {
			return "", fmt.Errorf("%w: %q is not a MAC (like 5C:CF:7F:12:34:56)", ErrBadFilter, s)
		}
		out[i] = strings.ToUpper(b)
	}
	return strings.Join(out, ":"), nil
}

func (f DeviceFilter) where() (string, []any) {
	var conds []string
	var args []any
	switch f.State {
	case "":
	case "none":
		conds = append(conds, "state = ''")
	case "held":
		conds = append(conds, "held_until > ?")
		args = append(args, ms(time.Now()))
	case "problem":
		conds = append(conds, problemSQL)
		args = append(args, ms(time.Now()))
	default:
		conds = append(conds, "state = ?")
		args = append(args, f.State)
	}
	if f.MAC != "" {
		if p, ok := strings.CutSuffix(strings.ToUpper(f.MAC), "*"); ok {
			conds = append(conds, "mac >= ? AND mac < ?")
			args = append(args, p, p+"\xff")
		} else {
			conds = append(conds, "mac = ?")
			args = append(args, strings.ToUpper(f.MAC))
		}
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

func (s *Store) reader() (*sql.DB, error) {
	if s == nil {
		return nil, nil
	}
	db := s.db.Load()
	if db == nil {
		return nil, ErrUnavailable
	}
	return db, nil
}

// Devices returns the devices f selects and how many there are in all.
func (s *Store) Devices(ctx context.Context, f DeviceFilter) ([]Device, int, error) {
	if err := f.Check(); err != nil {
		return nil, 0, err
	}
	db, err := s.reader()
	if db == nil {
		return nil, 0, err
	}
	if f.Limit <= 0 {
		f.Limit = 1000
	}
	where, args := f.where()
	var total int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM devices`+where, args...).Scan(&total); err != nil {
		return nil, 0, err
	}
	order := ` ORDER BY last_seen DESC, mac`
	if f.ProblemsFirst {
		order = ` ORDER BY ` + problemSQL + ` DESC, last_seen DESC, mac`
		args = append(args, ms(time.Now()))
	}
	rows, err := db.QueryContext(ctx, `SELECT `+deviceCols+` FROM devices`+where+order+` LIMIT ? OFFSET ?`,
		append(args, f.Limit, max(f.Offset, 0))...)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	out := []Device{}
	for rows.Next() {
		r, err := scanDevice(rows)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, r.Device)
	}
	return out, total, rows.Err()
}

// Device returns one device by MAC.
func (s *Store) Device(ctx context.Context, mac string) (*Device, bool, error) {
	db, err := s.reader()
	if db == nil {
		return nil, false, err
	}
	r, err := scanDevice(db.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE mac = ?`, strings.ToUpper(mac)))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return &r.Device, true, nil
}

// States counts devices by update state ("" for never sent an image).
func (s *Store) States(ctx context.Context) (map[string]int, error) {
	db, err := s.reader()
	if db == nil {
		return map[string]int{}, err
	}
	rows, err := db.QueryContext(ctx, `SELECT state, count(*) FROM devices GROUP BY state`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, err
		}
		out[st] = n
	}
	return out, rows.Err()
}

// HeldBack counts devices with an image held back now.
func (s *Store) HeldBack(ctx context.Context) (int, error) {
	db, err := s.reader()
	if db == nil {
		return 0, err
	}
	var n int
	err = db.QueryRowContext(ctx, `SELECT count(*) FROM devices WHERE held_until > ?`, ms(time.Now())).Scan(&n)
	return n, err
}

// EventFilter selects events, newest first; the zero value is the newest
// 100 of all.
type EventFilter struct {
	MAC      string
	Endpoint string
	Decision string
	Before   int64 // ids below this (paging); 0 for the newest
	Limit    int
}

const eventCols = `id, time, client, mac, family, method, endpoint, target, decision, status, reason, image, digest, running,
	sdk, free_space, chip_size, bytes, size, completed, finished, took_ms, repeats`

// Events returns the events f selects.
func (s *Store) Events(ctx context.Context, f EventFilter) ([]Event, error) {
	db, err := s.reader()
	if db == nil {
		return nil, err
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	var conds []string
	var args []any
	for _, c := range []struct{ col, v string }{{"mac", strings.ToUpper(f.MAC)}, {"endpoint", f.Endpoint}, {"decision", f.Decision}} {
		if c.v != "" {
			conds = append(conds, c.col+" = ?")
			args = append(args, c.v)
		}
	}
	if f.Before > 0 {
		conds = append(conds, "id < ?")
		args = append(args, f.Before)
	}
	where := ""
	if len(conds) > 0 {
		where = " WHERE " + strings.Join(conds, " AND ")
	}
	rows, err := db.QueryContext(ctx, `SELECT `+eventCols+` FROM events`+where+` ORDER BY id DESC LIMIT ?`, append(args, f.Limit)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Event{}
	for rows.Next() {
		var e Event
		var t int64
		var completed, finished int
		if err := rows.Scan(&e.ID, &t, &e.Client, &e.MAC, &e.Family, &e.Method, &e.Endpoint, &e.Target, &e.Decision, &e.Status, &e.Reason,
			&e.Image, &e.Digest, &e.Running, &e.SDK, &e.FreeSpace, &e.ChipSize, &e.Bytes, &e.Size, &completed, &finished, &e.Took, &e.Repeats); err != nil {
			return nil, err
		}
		e.Time, e.Completed, e.Finished = time.UnixMilli(t).UTC(), completed == 1, finished == 1
		out = append(out, e)
	}
	return out, rows.Err()
}

// Counts are the table sizes, for the status page.
type Counts struct {
	Devices int64 `json:"devices"`
	Events  int64 `json:"events"`
}

// Counts returns the table sizes without scanning the events.
func (s *Store) Counts(ctx context.Context) (Counts, error) {
	db, err := s.reader()
	if db == nil {
		return Counts{}, err
	}
	var c Counts
	var lo, hi sql.NullInt64
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM devices`).Scan(&c.Devices); err != nil {
		return c, err
	}
	if err := db.QueryRowContext(ctx, `SELECT min(id), max(id) FROM events`).Scan(&lo, &hi); err != nil {
		return c, err
	}
	if lo.Valid {
		c.Events = hi.Int64 - lo.Int64 + 1
	}
	return c, nil
}

// Hold is what a decision needs to know of a device's failed updates:
// the image it was last sent (its running digests), what it ran before,
// its state, the consecutive failures and the hold-back in force.
type Hold struct {
	SentDigests []string
	PrevDigest  string
	State       string
	Failures    int
	Until       time.Time
	// Pending: a download to the device was decided and its end is not
	// recorded yet (its handler is finishing).
	Pending bool
	// FilesystemSHA256 is the filesystem image the device last received
	// whole ("" for none).
	FilesystemSHA256 string
}

// Hold returns mac's update history for the hold-back decision (zero when
// the device is unknown or the record cannot be read). The query runs on
// one of the store's lookup goroutines (see lookups); a device the writer
// has never seen in the table (Store.macs) costs none. A known device is
// always asked of SQLite: otabox retry from a shell beside the server
// must hold its next check-in back no more.
func (s *Store) Hold(ctx context.Context, mac string) Hold {
	if s == nil || ctx.Err() != nil || s.macs.absent(strings.ToUpper(mac)) {
		return Hold{}
	}
	res := make(chan Hold, 1)
	select {
	case s.lookups <- func() { res <- s.hold(ctx, mac) }:
	case <-ctx.Done():
		return Hold{}
	case <-s.stop:
		return Hold{}
	}
	select {
	case h := <-res:
		return h
	case <-ctx.Done():
		return Hold{}
	}
}

// holdQuery is what a firmware request asks of the record about its device.
const holdQuery = `SELECT sent_digests, prev_digest, state, failures, held_until, pending_event, fs_sha256 FROM devices WHERE mac = ?`

func (s *Store) hold(ctx context.Context, mac string) Hold {
	db, _ := s.reader()
	if db == nil || mac == "" {
		return Hold{}
	}
	var digests string
	var until, pending int64
	var h Hold
	// Prepared once: parsing the query took half of each lookup's time
	// (profiled under downloads with a fresh MAC per request).
	st, err := s.prepared(db, holdQuery)
	if err != nil {
		return Hold{}
	}
	err = st.QueryRowContext(ctx, strings.ToUpper(mac)).Scan(&digests, &h.PrevDigest, &h.State, &h.Failures, &until, &pending, &h.FilesystemSHA256)
	h.Pending = pending != 0
	if err != nil {
		return Hold{}
	}
	h.SentDigests = strings.Fields(digests)
	if until > 0 {
		h.Until = time.UnixMilli(until)
	}
	if h.Pending {
		// The download's end may be lingering in the writer: have it
		// committed now, for the caller's next look.
		select {
		case s.flush <- struct{}{}:
		default:
		}
	}
	return h
}

// After applies a check-in reporting digest at now, as the store will
// fold it: a device sent an image whole that comes back running what it
// ran before has failed once more, and from HoldBackAfter failures on the
// image is held back. It returns the failures and the hold-back end.
func (h Hold) After(digest string, now time.Time) (failures int, until time.Time) {
	if digest == "" {
		return h.Failures, h.Until
	}
	d := Device{State: h.State, SentDigests: h.SentDigests, PrevDigest: h.PrevDigest, Failures: int64(h.Failures), HeldUntil: h.Until}
	next(d.State, classify(&d, digest)).apply(&d, now)
	return int(d.Failures), d.HeldUntil
}

// RolloutStats counts the devices sent image since a time, and how many
// of them failed.
func (s *Store) RolloutStats(ctx context.Context, image string, since time.Time) (sent, failed int, err error) {
	db, err := s.reader()
	if db == nil {
		return 0, 0, err
	}
	err = db.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(state = 'failed' OR failures > 0), 0) FROM devices WHERE sent = ? AND sent_at >= ?`,
		image, ms(since)).Scan(&sent, &failed)
	return sent, failed, err
}

// Retry clears the hold-back of mac in the store in dir, from outside the
// server (`otabox retry`). It reports whether the device is known.
func Retry(dir, mac string) (bool, error) {
	path := filepath.Join(dir, FileName)
	if _, err := os.Stat(path); err != nil {
		return false, fmt.Errorf("no fleet record in %s: %w", dir, err)
	}
	db, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		return false, err
	}
	defer db.Close()
	res, err := db.Exec(`UPDATE devices SET failures = 0, held_until = 0 WHERE mac = ?`, strings.ToUpper(mac))
	if err != nil {
		return false, fmt.Errorf("store %s: %w", path, err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}
