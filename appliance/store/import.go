package store

import (
	"bufio"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// ledgerRecord is one line of the JSON-lines ledger that releases before
// the store kept in the data dir (ledger-NNNNNN.jsonl). Only the importer
// reads it.
type ledgerRecord struct {
	Time      time.Time       `json:"time"`
	Client    string          `json:"client"`
	Family    string          `json:"family"`
	MAC       string          `json:"mac"`
	Endpoint  string          `json:"endpoint"`
	Target    string          `json:"target"`
	Running   string          `json:"running"`
	Digest    string          `json:"digest"`
	FreeSpace int64           `json:"free_space"`
	ChipSize  int64           `json:"chip_size"`
	SDK       string          `json:"sdk"`
	Status    int             `json:"status"`
	Decision  string          `json:"decision"`
	Reason    string          `json:"reason"`
	Image     string          `json:"image"`
	ImageMD5s []string        `json:"image_md5s"`
	Bytes     int64           `json:"bytes"`
	Size      int64           `json:"size"`
	Completed bool            `json:"completed"`
	Snapshot  []*ledgerDevice `json:"snapshot"`
}

type ledgerDevice struct {
	MAC        string    `json:"mac"`
	IP         string    `json:"ip"`
	Family     string    `json:"family"`
	FirstSeen  time.Time `json:"first_seen"`
	LastSeen   time.Time `json:"last_seen"`
	Running    string    `json:"running"`
	Digest     string    `json:"digest"`
	SDK        string    `json:"sdk"`
	Decision   string    `json:"decision"`
	Reason     string    `json:"reason"`
	State      string    `json:"state"`
	Sent       string    `json:"sent"`
	SentMD5s   []string  `json:"sent_md5s"`
	PrevDigest string    `json:"prev_digest"`
	Requests   int64     `json:"requests"`
}

// ImportReport says what an import read.
type ImportReport struct {
	Files, Events, Devices, Damaged int
}

// importLedger reads a previous release's ledger-*.jsonl files in the data
// dir into db, once: every readable record becomes an event folded into
// its device, snapshots restore the devices they list, damaged lines are
// counted and skipped, and the files are then renamed *.imported.
func (s *Store) importLedger(db *sql.DB) error {
	files, err := filepath.Glob(filepath.Join(s.dir, "ledger-*.jsonl"))
	if err != nil || len(files) == 0 {
		return err
	}
	sort.Strings(files)
	var rep ImportReport
	err = s.withTx(db, func(tx wtx) error {
		for _, name := range files {
			if err := s.importFile(tx, name, &rep); err != nil {
				return fmt.Errorf("%s: %w", filepath.Base(name), err)
			}
			rep.Files++
		}
		return tx.QueryRow(`SELECT count(*) FROM devices`).Scan(&rep.Devices)
	})
	if err != nil {
		return err
	}
	for _, name := range files {
		if err := os.Rename(name, name+".imported"); err != nil {
			s.log.Warn("store: imported ledger file could not be renamed; it would be imported again", "file", name, "err", err)
		}
	}
	s.log.Info("store: imported the previous release's ledger", "files", rep.Files, "events", rep.Events, "devices", rep.Devices, "damaged_lines", rep.Damaged)
	return nil
}

func (s *Store) importFile(tx wtx, name string, rep *ImportReport) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		var r ledgerRecord
		if err := json.Unmarshal(line, &r); err != nil || (r.Snapshot == nil && r.Endpoint == "") {
			rep.Damaged++
			continue
		}
		if r.Snapshot != nil {
			if err := s.importSnapshot(tx, r.Snapshot, rep); err != nil {
				return err
			}
			continue
		}
		ev := s.bound(&Event{
			Time: r.Time, Client: r.Client, MAC: r.MAC, Family: r.Family, Method: "GET", Endpoint: r.Endpoint, Target: r.Target,
			Decision: r.Decision, Status: r.Status, Reason: r.Reason, Image: r.Image, Digest: r.Digest, Running: r.Running,
			SDK: r.SDK, FreeSpace: r.FreeSpace, ChipSize: r.ChipSize, ImageDigests: r.ImageMD5s,
		})
		decided := ev.Endpoint != "catalog"
		id, err := s.insert(tx, ev, decided)
		if err != nil {
			return err
		}
		if decided && ev.Decision == "serve" {
			ev.ID, ev.Bytes, ev.Size, ev.Completed = id, r.Bytes, r.Size, r.Completed
			if err := s.finish(tx, ev); err != nil {
				return err
			}
		}
		rep.Events++
	}
	if err := sc.Err(); err != nil {
		rep.Damaged++ // a line past the scanner's limit: the rest of the file is unreadable
		s.log.Warn("store: import stopped reading a ledger file early", "file", name, "err", err)
	}
	return nil
}

func (s *Store) importSnapshot(tx wtx, devs []*ledgerDevice, rep *ImportReport) error {
	for _, d := range devs {
		if d == nil || d.MAC == "" {
			rep.Damaged++
			continue
		}
		ev := s.bound(&Event{MAC: d.MAC, Client: d.IP, Family: d.Family, Digest: d.Digest, Running: d.Running, SDK: d.SDK,
			Decision: d.Decision, Reason: d.Reason, Image: d.Sent, ImageDigests: d.SentMD5s})
		r := &row{Device: Device{
			MAC: ev.MAC, IP: ev.Client, Family: ev.Family, FirstSeen: d.FirstSeen, LastSeen: d.LastSeen, Running: ev.Running,
			Digest: ev.Digest, SDK: ev.SDK, Decision: ev.Decision, Reason: ev.Reason, State: s.cut(d.State, MaxString),
			Sent: ev.Image, SentDigests: ev.ImageDigests, PrevDigest: s.cut(d.PrevDigest, MaxString), Requests: d.Requests,
		}}
		if err := saveDevice(tx, r); err != nil {
			return err
		}
	}
	return nil
}
