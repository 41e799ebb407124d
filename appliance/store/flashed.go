package store

import (
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// Flashed is one board written over USB by `otabox flash`.
type Flashed struct {
	Time      time.Time
	Slot      string // where it sat on the tray
	Port      string
	MAC       string
	Family    string // ESP8266 or ESP32
	Chip      string // as its ROM names it
	Image     string // the app part's file name
	SHA256    string // of the app part
	Version   string
	Digests   []string // what it reports running once it boots the app (its running MD5s and SHA-256)
	Bytes     int64    // written
	Size      int64    // to write
	Passed    bool     // written (and verified, unless Verified says otherwise)
	Verified  string   // "md5", or why not ("written, not verified (...)")
	Revision  string   // the chip's revision, when its ROM tells it
	Refused   bool     // nothing written: the image is not for its chip
	Reason    string
	Took      time.Duration
	FlashSize int64  // -1: not known
	FlashID   string // JEDEC id, hex
}

// FlashRecord is the fleet record in a data dir, open for one run of
// `otabox flash` beside a server that may be running.
type FlashRecord struct {
	db    *sql.DB
	s     *Store // for its prepared statements and bounds; no writer
	batch string
}

// OpenFlashRecord opens dir's record for boards flashed over USB, into the
// open batch named (none when "").
func OpenFlashRecord(dir, batch string) (*FlashRecord, error) {
	db, err := openWriter(dir)
	if err != nil {
		return nil, err
	}
	if batch != "" {
		var closed int64
		err := db.QueryRow(`SELECT closed FROM batches WHERE name = ?`, batch).Scan(&closed)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			err = fmt.Errorf("no batch %q in %s: start it first (otabox batch start %s --image ...)", batch, filepath.Join(dir, FileName), batch)
		case err == nil && closed != 0:
			err = fmt.Errorf("batch %s is closed", batch)
		}
		if err != nil {
			db.Close()
			return nil, err
		}
	}
	return &FlashRecord{db: db, s: &Store{}, batch: batch}, nil
}

// Close closes the record.
func (r *FlashRecord) Close() error { return r.db.Close() }

// Flashing is one board being written, for the station page's tile.
type Flashing struct {
	Slot, MAC, Chip, Family string
	Done, Total             int64
}

// Progress marks boards being written as in progress in the batch, with
// their bytes so far: the station page's tiles follow them live.
func (r *FlashRecord) Progress(now time.Time, boards []Flashing) error {
	if r.batch == "" {
		return nil
	}
	return r.s.withTx(r.db, func(tx wtx) error {
		for _, f := range boards {
			if f.MAC == "" {
				continue
			}
			mac := strings.ToUpper(r.s.cut(f.MAC, MaxString))
			bd, err := scanBatchDevice(tx.QueryRow(`SELECT `+batchDeviceCols+` FROM batch_devices WHERE batch = ? AND mac = ?`, r.batch, mac))
			switch {
			case errors.Is(err, sql.ErrNoRows):
				bd = &BatchDevice{Batch: r.batch, MAC: mac, FlashSize: -1, FirstSeen: now, Started: now}
			case err != nil:
				return err
			}
			if bd.Result != ResultInProgress {
				bd.Started, bd.Ended, bd.Reason = now, time.Time{}, ""
			}
			bd.IP, bd.Slot, bd.Chip, bd.Family, bd.LastSeen = "usb:"+f.Slot, r.s.cut(f.Slot, MaxString), r.s.cut(f.Chip, MaxString), f.Family, now
			bd.Result, bd.Bytes, bd.Size = ResultInProgress, f.Done, f.Total
			if err := saveBatchDevice(tx, bd); err != nil {
				return err
			}
		}
		return nil
	})
}

// Done keeps each board's end: an event, the device (sent the image, so
// that its first check-in over Wi-Fi running it confirms it) and, in a
// batch, its row ("flashed", "refused" or "failed").
func (r *FlashRecord) Done(boards []Flashed) error {
	return r.s.withTx(r.db, func(tx wtx) error {
		for _, f := range boards {
			if err := r.s.recordFlashed(tx, r.batch, f); err != nil {
				return err
			}
		}
		return nil
	})
}

// RecordFlashed keeps boards flashed over USB in the fleet record in dir
// (OpenFlashRecord, then Done).
func RecordFlashed(dir, batch string, boards []Flashed) error {
	r, err := OpenFlashRecord(dir, batch)
	if err != nil {
		return err
	}
	defer r.Close()
	return r.Done(boards)
}

func (s *Store) recordFlashed(tx wtx, batch string, f Flashed) error {
	decision, status := "serve", 200
	switch {
	case f.Refused:
		decision, status = "refuse", 403
	case !f.Passed:
		decision, status = "error", 500
	}
	ev := s.bound(&Event{Time: f.Time, Client: "usb:" + f.Slot, MAC: f.MAC, Family: f.Family, Method: "FLASH", Endpoint: "serial",
		Target: f.Port, Decision: decision, Status: status, Reason: f.Reason, Image: f.Image, FreeSpace: -1, ChipSize: f.FlashSize,
		Bytes: f.Bytes, Size: f.Size, Completed: f.Passed, Took: f.Took.Milliseconds(), Chip: f.Chip, ImageDigests: f.Digests})
	if _, err := tx.Exec(`INSERT INTO events (`+eventInsertCols+`) VALUES `+eventRow,
		ms(ev.Time), ev.Client, ev.MAC, ev.Family, ev.Method, ev.Endpoint, ev.Target, ev.Decision, ev.Status, ev.Reason,
		ev.Image, ev.Digest, ev.Running, ev.SDK, ev.FreeSpace, ev.ChipSize, ev.Bytes, ev.Size, b2i(ev.Completed), 1, ev.Took, 1); err != nil {
		return err
	}
	if ev.MAC == "" {
		return nil // a board whose ROM never answered has no identity: only its event
	}
	d, found, err := loadDevice(tx, ev.MAC)
	if err != nil {
		return err
	}
	if !found {
		d = &row{Device: Device{MAC: ev.MAC, FirstSeen: ev.Time}}
	}
	d.Requests++
	if ev.Time.After(d.LastSeen) {
		d.LastSeen = ev.Time
	}
	d.Family, d.Chip, d.Decision, d.Reason = ev.Family, ev.Chip, decision, ev.Reason
	if f.Passed {
		d.State, d.Sent, d.SentDigests, d.SentAt, d.PrevDigest = StateSent, ev.Image, ev.ImageDigests, ev.Time, d.Digest
		d.Downloads++
		d.Failures, d.HeldUntil = 0, time.Time{}
		d.Reason = "flashed over USB (slot " + f.Slot + "), verified"
	}
	if err := saveDevice(tx, d); err != nil {
		return err
	}
	if batch == "" {
		return nil
	}
	bd, err := scanBatchDevice(tx.QueryRow(`SELECT `+batchDeviceCols+` FROM batch_devices WHERE batch = ? AND mac = ?`, batch, ev.MAC))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		bd = &BatchDevice{Batch: batch, MAC: ev.MAC, FlashSize: f.FlashSize, FirstSeen: ev.Time}
	case err != nil:
		return err
	}
	bd.IP, bd.Slot, bd.Family, bd.Chip, bd.LastSeen = ev.Client, f.Slot, ev.Family, ev.Chip, ev.Time
	if f.Revision != "" {
		bd.Revision = s.cut(f.Revision, MaxString)
	}
	if f.FlashSize > 0 {
		bd.FlashSize = f.FlashSize
	}
	if f.FlashID != "" {
		bd.FlashID = s.cut(f.FlashID, MaxString)
	}
	bd.Attempts++
	bd.Bytes, bd.Size = f.Bytes, f.Size
	if bd.Started.IsZero() {
		bd.Started = ev.Time
	}
	bd.Ended = ev.Time.Add(f.Took)
	switch {
	case f.Passed:
		bd.Result, bd.Reason = ResultFlashed, ""
		if f.Verified != "" && f.Verified != "md5" {
			bd.Reason = s.cut(f.Verified, MaxText) // the report says it was not read back
		}
		bd.AfterImage, bd.AfterVersion, bd.AfterSHA256 = ev.Image, s.cut(f.Version, MaxString), s.cut(f.SHA256, MaxString)
	case f.Refused:
		bd.Result, bd.Reason = ResultRefused, ev.Reason
	default:
		bd.Result, bd.Reason = ResultFailed, ev.Reason
	}
	return saveBatchDevice(tx, bd)
}
