package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"otabox/appliance/policy"
)

// Batch is one tray of boards on a factory bench: while it is open,
// /update gives every device it covers (all, or one policy group) its
// image, and every such device is recorded against it.
type Batch struct {
	Name     string    `json:"name"`
	Image    string    `json:"image"`
	Group    string    `json:"group,omitempty"`
	Expect   int       `json:"expect,omitempty"`
	Note     string    `json:"note,omitempty"`
	Customer string    `json:"customer,omitempty"`
	Order    string    `json:"order,omitempty"`
	Source   string    `json:"source"`
	Opened   time.Time `json:"opened"`
	Closed   time.Time `json:"closed,omitzero"`
	// ImageVersion, ImageMD5 and ImageSHA256 are the image's as the
	// catalog had it when the batch opened.
	ImageVersion string `json:"image_version,omitempty"`
	ImageMD5     string `json:"image_md5,omitempty"`
	ImageSHA256  string `json:"image_sha256,omitempty"`
}

// IsOpen reports whether the batch still gives devices its image.
func (b Batch) IsOpen() bool { return b.Closed.IsZero() }

// Results of a device in a batch.
const (
	ResultInProgress = "in-progress" // a download is running
	ResultWaiting    = "waiting"     // sent whole; waiting for its check-in after the reboot
	ResultConfirmed  = "confirmed"   // checked in running the batch image
	ResultFailed     = "failed"      // came back running something else
	ResultCutOff     = "cut-off"     // the download stopped part-way
	ResultRefused    = "refused"     // the image does not suit it (chip, flash, policy)
	ResultHeld       = "held"        // asked, not sent, for another reason (see Reason)
	// ResultFlashed is a board written over USB and verified by its ROM's
	// MD5 (otabox flash): proven to hold the image, not yet seen running it.
	ResultFlashed = "flashed"
)

// BatchDevice is what one device did in one batch.
type BatchDevice struct {
	Batch         string    `json:"batch"`
	MAC           string    `json:"mac"`
	IP            string    `json:"ip"`
	Family        string    `json:"family,omitempty"`
	Chip          string    `json:"chip,omitempty"`
	Revision      string    `json:"revision,omitempty"`
	FlashSize     int64     `json:"flash_size"` // -1: not sent
	BeforeImage   string    `json:"before_image,omitempty"`
	BeforeVersion string    `json:"before_version,omitempty"`
	BeforeMD5     string    `json:"before_md5,omitempty"`
	AfterImage    string    `json:"after_image,omitempty"`
	AfterVersion  string    `json:"after_version,omitempty"`
	AfterMD5      string    `json:"after_md5,omitempty"`
	Bytes         int64     `json:"bytes"`
	Size          int64     `json:"size"`
	FirstSeen     time.Time `json:"first_seen"`
	LastSeen      time.Time `json:"last_seen"`
	Started       time.Time `json:"started,omitzero"`
	Ended         time.Time `json:"ended,omitzero"`
	DurationS     int64     `json:"duration_s"` // Duration in seconds, set by the report that shows it
	Attempts      int       `json:"attempts"`
	Result        string    `json:"result"`
	Reason        string    `json:"reason,omitempty"`
	// Slot is where the board sat on the tray when it was flashed over
	// USB; AfterSHA256 the SHA-256 of what was written there.
	Slot        string `json:"slot,omitempty"`
	AfterSHA256 string `json:"after_sha256,omitempty"`
	FlashID     string `json:"flash_id,omitempty"` // JEDEC id, hex, when read over USB
	// Station is the box whose record the row comes from, in a report the
	// hub combines from several bench stations ("" from one box's own).
	Station string `json:"station,omitempty"`
}

// Duration is the time from the first download to the result, rounded to
// the second; 0 while it has none.
func (d *BatchDevice) Duration() time.Duration {
	if d.Started.IsZero() || d.Ended.IsZero() || d.Ended.Before(d.Started) {
		return 0
	}
	return d.Ended.Sub(d.Started).Round(time.Second)
}

// BatchEvent is what a batch record takes from one exchange besides the
// event itself: the batch, and what the device and catalog said.
type BatchEvent struct {
	Name           string
	Chip, Revision string // as the provisioning sketch reports them (x-*-version)
	RunningVersion string // the catalog version of what the device runs
	ImageVersion   string // the version of the image served or considered
}

const batchCols = `name, image, grp, expect, note, customer, ord, source, opened, closed, image_version, image_md5, image_sha256`

func scanBatch(sc scanner) (*Batch, error) {
	var b Batch
	var opened, closed int64
	if err := sc.Scan(&b.Name, &b.Image, &b.Group, &b.Expect, &b.Note, &b.Customer, &b.Order, &b.Source, &opened, &closed, &b.ImageVersion, &b.ImageMD5, &b.ImageSHA256); err != nil {
		return nil, err
	}
	b.Opened = time.UnixMilli(opened).UTC()
	if closed > 0 {
		b.Closed = time.UnixMilli(closed).UTC()
	}
	return &b, nil
}

// ErrBatchExists is returned when a batch of that name was opened before.
var ErrBatchExists = errors.New("batch exists")

// startBatch opens b unless a batch of its name exists, or an open batch
// covers the same devices (the same group, or either covers all): a
// device must never be in two open batches.
func startBatch(ctx context.Context, db *sql.DB, b Batch, now time.Time) error {
	if err := policy.CheckBatchName(b.Name); err != nil {
		return err
	}
	if b.Image == "" {
		return errors.New("batch " + b.Name + ": no image")
	}
	for _, f := range []*string{&b.Note, &b.Customer, &b.Order, &b.Source, &b.Image} {
		if len(*f) > MaxText {
			return fmt.Errorf("batch %s: %q is longer than %d bytes", b.Name, *f, MaxText)
		}
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	old, err := scanBatch(tx.QueryRowContext(ctx, `SELECT `+batchCols+` FROM batches WHERE name = ?`, b.Name))
	switch {
	case err == nil:
		state := "open since " + old.Opened.Local().Format("2006-01-02 15:04")
		if !old.IsOpen() {
			state = "closed at " + old.Closed.Local().Format("2006-01-02 15:04")
		}
		return fmt.Errorf("%w: %s (%s, image %s); a batch name is used once, so that its report stays what it was", ErrBatchExists, b.Name, state, old.Image)
	case !errors.Is(err, sql.ErrNoRows):
		return err
	}
	rows, err := tx.QueryContext(ctx, `SELECT `+batchCols+` FROM batches WHERE closed = 0`)
	if err != nil {
		return err
	}
	var open []*Batch
	for rows.Next() {
		o, err := scanBatch(rows)
		if err != nil {
			rows.Close()
			return err
		}
		open = append(open, o)
	}
	rows.Close()
	for _, o := range open {
		if o.Group == "" || b.Group == "" || o.Group == b.Group {
			cover := "every device"
			if o.Group != "" {
				cover = "group " + o.Group
			}
			return fmt.Errorf("batch %s is open and covers %s; close it first (otabox batch close %s), or give each batch its own --group", o.Name, cover, o.Name)
		}
	}
	for _, f := range []*string{&b.ImageVersion, &b.ImageMD5, &b.ImageSHA256} {
		if len(*f) > MaxString {
			*f = (*f)[:MaxString]
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO batches (`+batchCols+`) VALUES (?,?,?,?,?,?,?,?,?,0,?,?,?)`,
		b.Name, b.Image, b.Group, b.Expect, b.Note, b.Customer, b.Order, b.Source, ms(now), b.ImageVersion, b.ImageMD5, b.ImageSHA256); err != nil {
		return err
	}
	return tx.Commit()
}

// openWriter opens the store in dir for a write from outside the server
// (the CLI), next to a server that may be writing it.
func openWriter(dir string) (*sql.DB, error) {
	path := filepath.Join(dir, FileName)
	if _, err := os.Stat(path); err != nil {
		// A bench box may be set up before its first start: make the
		// record, as the server would.
		s, err := Open(dir, Options{})
		if err != nil {
			return nil, err
		}
		if err := s.Close(); err != nil {
			return nil, err
		}
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("no fleet record in %s: %w", dir, err)
		}
	}
	return openExisting(path, false)
}

// StartBatch opens a batch in the store in dir (`otabox batch start`).
func StartBatch(dir string, b Batch) error {
	db, err := openWriter(dir)
	if err != nil {
		return err
	}
	defer db.Close()
	return startBatch(context.Background(), db, b, time.Now())
}

// ErrUnproven is a batch close refused because boards have not yet
// proved they run the image (waiting for their check-in, or downloading).
var ErrUnproven = errors.New("boards have not proved they run the image")

// CloseBatch closes the open batch name in the store in dir (`otabox
// batch close`); devices are no longer given its image. With boards still
// waiting or downloading it refuses (ErrUnproven, naming them) unless
// force: the report then says the batch closed with them unproven.
func CloseBatch(dir, name string, force bool) (*Batch, error) {
	db, err := openWriter(dir)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	if !force {
		rows, err := db.Query(`SELECT mac, slot FROM batch_devices WHERE batch = ? AND result IN (?, ?) ORDER BY mac`, name, ResultWaiting, ResultInProgress)
		if err != nil {
			return nil, err
		}
		var waiting []string
		for rows.Next() {
			var mac, slot string
			if rows.Scan(&mac, &slot) == nil {
				if slot != "" {
					mac += " (slot " + slot + ")"
				}
				waiting = append(waiting, mac)
			}
		}
		rows.Close()
		if len(waiting) > 0 {
			return nil, fmt.Errorf("%w: %d still waiting or downloading (%s); wait for their check-in, or close with --force and the report says they are unproven",
				ErrUnproven, len(waiting), strings.Join(waiting, ", "))
		}
	}
	res, err := db.Exec(`UPDATE batches SET closed = ? WHERE name = ? AND closed = 0`, ms(time.Now()), name)
	if err != nil {
		return nil, err
	}
	b, err := scanBatch(db.QueryRow(`SELECT `+batchCols+` FROM batches WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("no batch %q in %s", name, filepath.Join(dir, FileName))
	}
	if err != nil {
		return nil, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return b, fmt.Errorf("batch %s was already closed at %s", name, b.Closed.Local().Format("2006-01-02 15:04:05"))
	}
	return b, nil
}

// EnsureBatch opens b (a policy file's batch line) unless a batch of its
// name exists already, which it then returns: a closed batch is never
// reopened.
func (s *Store) EnsureBatch(ctx context.Context, b Batch) (existing *Batch, err error) {
	db, err := s.reader()
	if db == nil {
		if err == nil {
			err = errors.New("no fleet record (--data-dir \"\")")
		}
		return nil, err
	}
	err = startBatch(ctx, db, b, s.opts.Now())
	if errors.Is(err, ErrBatchExists) {
		old, _, err := s.Batch(ctx, b.Name)
		return old, err
	}
	return nil, err
}

// OpenBatches are the batches in force, oldest first. It is read on
// every /update, so that a batch started or closed from the command line
// applies from the next check-in.
func (s *Store) OpenBatches(ctx context.Context) ([]Batch, error) {
	return s.batches(ctx, ` WHERE closed = 0`)
}

// Batches are every batch, newest first.
func (s *Store) Batches(ctx context.Context) ([]Batch, error) {
	bs, err := s.batches(ctx, ``)
	sort.SliceStable(bs, func(i, j int) bool { return bs[i].Opened.After(bs[j].Opened) })
	return bs, err
}

func (s *Store) batches(ctx context.Context, where string) ([]Batch, error) {
	db, err := s.reader()
	if db == nil {
		return nil, err
	}
	rows, err := db.QueryContext(ctx, `SELECT `+batchCols+` FROM batches`+where+` ORDER BY opened, name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Batch
	for rows.Next() {
		b, err := scanBatch(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *b)
	}
	return out, rows.Err()
}

// Batch returns one batch by name.
func (s *Store) Batch(ctx context.Context, name string) (*Batch, bool, error) {
	db, err := s.reader()
	if db == nil {
		if err == nil {
			err = ErrUnavailable
		}
		return nil, false, err
	}
	b, err := scanBatch(db.QueryRowContext(ctx, `SELECT `+batchCols+` FROM batches WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	return b, err == nil, err
}

const batchDeviceCols = `batch, mac, ip, family, chip, revision, flash_size, before_image, before_version, before_md5,
	after_image, after_version, after_md5, bytes, size, first_seen, last_seen, started, ended, attempts, result, reason,
	slot, after_sha256, flash_id`

func scanBatchDevice(sc scanner) (*BatchDevice, error) {
	var d BatchDevice
	var first, last, started, ended int64
	if err := sc.Scan(&d.Batch, &d.MAC, &d.IP, &d.Family, &d.Chip, &d.Revision, &d.FlashSize, &d.BeforeImage, &d.BeforeVersion, &d.BeforeMD5,
		&d.AfterImage, &d.AfterVersion, &d.AfterMD5, &d.Bytes, &d.Size, &first, &last, &started, &ended, &d.Attempts, &d.Result, &d.Reason,
		&d.Slot, &d.AfterSHA256, &d.FlashID); err != nil {
		return nil, err
	}
	d.FirstSeen, d.LastSeen = time.UnixMilli(first).UTC(), time.UnixMilli(last).UTC()
	if started > 0 {
		d.Started = time.UnixMilli(started).UTC()
	}
	if ended > 0 {
		d.Ended = time.UnixMilli(ended).UTC()
	}
	return &d, nil
}

// BatchDevices are the devices seen in batch name, by MAC.
func (s *Store) BatchDevices(ctx context.Context, name string) ([]BatchDevice, error) {
	db, err := s.reader()
	if db == nil {
		return nil, err
	}
	rows, err := db.QueryContext(ctx, `SELECT `+batchDeviceCols+` FROM batch_devices WHERE batch = ? ORDER BY mac`, name)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []BatchDevice{}
	for rows.Next() {
		d, err := scanBatchDevice(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *d)
	}
	return out, rows.Err()
}

// foldBatch applies one exchange of a device in a batch to its batch
// record, in the transaction that records the exchange. finished is the
// end of a download; otherwise it is the decision.
func (s *Store) foldBatch(tx wtx, ev *Event, finished bool) error {
	b := ev.Batch
	if b == nil || b.Name == "" || ev.MAC == "" || ev.Method == "HEAD" {
		return nil
	}
	d, err := scanBatchDevice(tx.QueryRow(`SELECT `+batchDeviceCols+` FROM batch_devices WHERE batch = ? AND mac = ?`, b.Name, ev.MAC))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		d = &BatchDevice{Batch: b.Name, MAC: ev.MAC, FlashSize: -1, FirstSeen: ev.Time}
	case err != nil:
		return err
	}
	d.IP = ev.Client
	if ev.Time.After(d.LastSeen) {
		d.LastSeen = ev.Time
	}
	if ev.Family != "" {
		d.Family = ev.Family
	}
	if b.Chip != "" {
		d.Chip = b.Chip
	} else if d.Chip == "" && ev.Chip != "" {
		d.Chip = ev.Chip
	}
	if b.Revision != "" {
		d.Revision = b.Revision
	}
	if ev.ChipSize >= 0 {
		d.FlashSize = ev.ChipSize
	}
	runsIt := ev.Digest != "" && ev.Image != "" && containsFold(ev.ImageDigests, ev.Digest)
	if d.BeforeMD5 == "" && ev.Digest != "" && !runsIt && !finished {
		d.BeforeImage, d.BeforeVersion, d.BeforeMD5 = ev.Running, b.RunningVersion, ev.Digest
	}
	switch {
	case finished:
		d.Bytes, d.Size = ev.Bytes, ev.Size
		if ev.Completed {
			d.Result, d.Reason = ResultWaiting, ""
		} else {
			d.Result, d.Reason, d.Ended = ResultCutOff, ev.Reason, ev.Time.Add(time.Duration(ev.Took)*time.Millisecond)
		}
	case ev.Decision == "serve":
		d.Attempts++
		if d.Started.IsZero() {
			d.Started = ev.Time
		}
		d.AfterImage, d.AfterVersion = ev.Image, b.ImageVersion
		d.Result, d.Reason, d.Ended = ResultInProgress, "", time.Time{}
	case runsIt:
		if d.Result != ResultConfirmed {
			d.Ended = ev.Time
			if d.Started.IsZero() {
				d.Started = ev.Time // it ran the image already: nothing to wait for
			}
		}
		d.AfterImage, d.AfterVersion, d.AfterMD5 = ev.Image, b.ImageVersion, ev.Digest
		d.Result, d.Reason = ResultConfirmed, ""
	case ev.Decision == "refuse":
		d.Result, d.Reason, d.Ended = ResultRefused, ev.Reason, ev.Time
	case (d.Result == ResultWaiting || d.Result == ResultFlashed) && ev.Digest != "":
		// Sent whole, and it came back running something else: the image
		// did not boot (eboot or the bootloader fell back), or it was
		// replaced.
		what := "its previous image"
		if !strings.EqualFold(ev.Digest, d.BeforeMD5) {
			what = "an image that is neither (" + ev.Digest + ")"
		}
		d.Result, d.Reason, d.Ended = ResultFailed, "checked in after the update still running "+what, ev.Time
	case d.Result == ResultConfirmed && ev.Digest != "":
		d.Result, d.Reason, d.Ended = ResultFailed, "rolled back: checked in running "+ev.Digest+" after confirming", ev.Time
	case d.Result == ResultFailed || d.Result == ResultCutOff:
		if ev.Reason != "" {
			d.Reason = d.Reason + "; then: " + ev.Reason
			d.Reason = s.cut(d.Reason, MaxText)
		}
	default:
		d.Result, d.Reason = ResultHeld, ev.Reason
	}
	return saveBatchDevice(tx, d)
}

func saveBatchDevice(tx wtx, d *BatchDevice) error {
	_, err := tx.Exec(`INSERT OR REPLACE INTO batch_devices (`+batchDeviceCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		d.Batch, d.MAC, d.IP, d.Family, d.Chip, d.Revision, d.FlashSize, d.BeforeImage, d.BeforeVersion, d.BeforeMD5,
		d.AfterImage, d.AfterVersion, d.AfterMD5, d.Bytes, d.Size, ms(d.FirstSeen), ms(d.LastSeen), msOrZero(d.Started), msOrZero(d.Ended),
		d.Attempts, d.Result, d.Reason, d.Slot, d.AfterSHA256, d.FlashID)
	return err
}

func msOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return ms(t)
}

// Summary is a batch's progress, as the station page and the report
// show it.
type Summary struct {
	Batch
	Seen       int            `json:"seen"`
	Results    map[string]int `json:"results"`
	Confirmed  int            `json:"confirmed"`
	Flashed    int            `json:"flashed"`         // written over USB and verified, not yet seen running
	NeedsHelp  int            `json:"needs_attention"` // failed, cut off, refused or held; in a closed batch also the unproven
	Unproven   int            `json:"unproven"`        // waiting or in progress when the batch closed
	PerHour    float64        `json:"boards_per_hour"` // confirmed per hour since the first board started
	MedianTime time.Duration  `json:"-"`
	MedianSecs float64        `json:"median_seconds"` // per confirmed board, first download to confirmation
	Bytes      int64          `json:"bytes"`
}

// Summarize counts devs (the batch's devices) as of now.
func Summarize(b Batch, devs []BatchDevice, now time.Time) Summary {
	s := Summary{Batch: b, Seen: len(devs), Results: map[string]int{}}
	var first, last time.Time
	var times []time.Duration
	for i := range devs {
		d := &devs[i]
		s.Results[d.Result]++
		s.Bytes += d.Bytes
		switch d.Result {
		case ResultConfirmed, ResultFlashed:
			if d.Result == ResultConfirmed {
				s.Confirmed++
			} else {
				s.Flashed++
			}
			times = append(times, d.Duration())
			if first.IsZero() || d.Started.Before(first) {
				first = d.Started
			}
			if d.Ended.After(last) {
				last = d.Ended
			}
		case ResultFailed, ResultCutOff, ResultRefused, ResultHeld:
			s.NeedsHelp++
		case ResultWaiting, ResultInProgress:
			if !b.IsOpen() {
				s.Unproven++
				s.NeedsHelp++ // closed before it proved it runs the image
			}
		}
	}
	if len(times) > 0 {
		sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
		s.MedianTime = times[len(times)/2]
		if len(times)%2 == 0 {
			s.MedianTime = (times[len(times)/2-1] + times[len(times)/2]) / 2
		}
		s.MedianSecs = s.MedianTime.Seconds()
		end := now
		if !b.IsOpen() {
			end = b.Closed
		}
		if span := end.Sub(first); span > 0 {
			s.PerHour = float64(s.Confirmed+s.Flashed) / span.Hours()
		}
	}
	return s
}
