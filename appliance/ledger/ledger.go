// Package ledger remembers every device request otabox answered: an
// append-only log of JSON lines in a data directory, replayed into a
// fleet table at start-up. A torn last line from a crash is skipped on
// replay, never fatal.
//
// Durability: a record of a firmware decision (a download, a 304, a
// refusal) is acknowledged only once it is on disk (fsync), so neither a
// kill -9 nor a power cut loses one. A catalog listing carries no device
// identity and devices repeat it whenever their update page opens: it is
// queued without waiting, written by the next batch and fsynced within a
// second, so a crash can lose the listings of that last moment and no
// decision. Writes are group-committed: one fsync covers every record that
// arrived meanwhile.
package ledger

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Record is one answered device request.
type Record struct {
	Time      time.Time `json:"time"`
	Client    string    `json:"client"`            // IP address
	Family    string    `json:"family,omitempty"`  // ESP8266 / ESP32
	MAC       string    `json:"mac,omitempty"`     // station MAC when sent
	Endpoint  string    `json:"endpoint"`          // catalog, firmware, update
	Target    string    `json:"target"`            // what was asked
	Running   string    `json:"running,omitempty"` // catalog image the device runs, if known
	Digest    string    `json:"digest,omitempty"`  // sketch-md5 (or sha256) it reported
	FreeSpace int64     `json:"free_space,omitempty"`
	ChipSize  int64     `json:"chip_size,omitempty"`
	SDK       string    `json:"sdk,omitempty"`
	Status    int       `json:"status"`
	Decision  string    `json:"decision"` // serve, no-update, refuse, error
	Reason    string    `json:"reason,omitempty"`
	Image     string    `json:"image,omitempty"`      // image served or considered
	ImageMD5s []string  `json:"image_md5s,omitempty"` // its running digests, to confirm later
	Bytes     int64     `json:"bytes,omitempty"`      // bytes sent
	Size      int64     `json:"size,omitempty"`       // bytes that should have been sent
	Completed bool      `json:"completed,omitempty"`  // the whole image went out
	Snapshot  []*Device `json:"snapshot,omitempty"`   // at the head of a rotated file: the fleet so far
}

// Update states of a device.
const (
	StateNone      = ""          // never sent an image
	StateSent      = "sent"      // an image went out whole; not yet seen running it
	StateCut       = "cut-off"   // a download stopped part-way
	StateConfirmed = "confirmed" // checked in running the image it was sent
	StateFailed    = "failed"    // checked in still running what it ran before
)

// Device is what the ledger knows of one device (by MAC).
type Device struct {
	MAC        string    `json:"mac"`
	IP         string    `json:"ip"`
	Family     string    `json:"family,omitempty"`
	FirstSeen  time.Time `json:"first_seen"`
	LastSeen   time.Time `json:"last_seen"`
	Running    string    `json:"running,omitempty"` // catalog image, when known
	Digest     string    `json:"digest,omitempty"`
	SDK        string    `json:"sdk,omitempty"`
	Decision   string    `json:"decision,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	State      string    `json:"state,omitempty"`
	Sent       string    `json:"sent,omitempty"`        // image of the last update
	SentMD5s   []string  `json:"sent_md5s,omitempty"`   // its running digests
	PrevDigest string    `json:"prev_digest,omitempty"` // what the device ran when it was sent
	Requests   int       `json:"requests"`
}

// Options tune a Ledger.
type Options struct {
	Logger *slog.Logger
	// MaxFileSize rotates the log past this many bytes (default 8 MiB);
	// Keep files are kept (default 4).
	MaxFileSize int64
	Keep        int
}

// Ledger is the open log and the fleet table built from it.
type Ledger struct {
	dir  string
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	devices map[string]*Device
	f       *os.File
	size    int64
	seq     int

	queue   chan *pending
	closed  chan struct{}
	stopped chan struct{} // the writer has exited
	closeMu sync.Once
}

type pending struct {
	line    []byte
	durable bool // fsync before acknowledging
	done    chan error
}

// lazySync bounds how long a non-durable record waits for its fsync.
const lazySync = time.Second

// Open replays the logs in dir (creating it if needed) and opens the
// newest for appending.
func Open(dir string, opts Options) (*Ledger, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxFileSize == 0 {
		opts.MaxFileSize = 4 << 20
	}
	if opts.Keep == 0 {
		opts.Keep = 4
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("ledger %s: %w", dir, err)
	}
	l := &Ledger{dir: dir, opts: opts, log: opts.Logger, devices: map[string]*Device{}, queue: make(chan *pending, 256), closed: make(chan struct{}), stopped: make(chan struct{})}
	files, err := l.files()
	if err != nil {
		return nil, err
	}
	if err := l.replayAll(files); err != nil {
		return nil, err
	}
	l.seq = 1
	if n := len(files); n > 0 {
		fmt.Sscanf(filepath.Base(files[n-1]), "ledger-%06d.jsonl", &l.seq)
	}
	if err := l.openFile(); err != nil {
		return nil, err
	}
	go l.writer()
	return l, nil
}

func (l *Ledger) files() ([]string, error) {
	files, err := filepath.Glob(filepath.Join(l.dir, "ledger-*.jsonl"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	return files, nil
}

// replayAll rebuilds the fleet from the newest file that starts with a
// snapshot onwards: a rotated file holds the whole fleet at its head, so
// start-up reads at most one file's worth of records, not the history.
func (l *Ledger) replayAll(files []string) error {
	from := 0
	for i := len(files) - 1; i > 0; i-- {
		if startsWithSnapshot(files[i]) {
			from = i
			break
		}
	}
	for _, name := range files[from:] {
		if err := l.replay(name); err != nil {
			return err
		}
	}
	return nil
}

func startsWithSnapshot(name string) bool {
	f, err := os.Open(name)
	if err != nil {
		return false
	}
	defer f.Close()
	head := make([]byte, 256)
	n, _ := f.Read(head)
	return bytes.Contains(head[:n], []byte(`"endpoint":"snapshot"`))
}

// replay applies one file's records. A line that does not parse is a
// torn write from a crash: it is skipped with a warning.
func (l *Ledger) replay(name string) error {
	b, err := os.ReadFile(name)
	if err != nil {
		return fmt.Errorf("ledger %s: %w", name, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	n := 0
	for sc.Scan() {
		n++
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			l.log.Warn("ledger: skipped a torn or damaged line", "file", filepath.Base(name), "line", n, "err", err)
			continue
		}
		l.apply(&r)
	}
	return nil
}

func (l *Ledger) openFile() error {
	name := filepath.Join(l.dir, fmt.Sprintf("ledger-%06d.jsonl", l.seq))
	f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("ledger: %w", err)
	}
	if fi.Size() > 0 {
		// Start on a fresh line: the last one may be torn.
		if _, err := f.Write([]byte("\n")); err != nil {
			f.Close()
			return fmt.Errorf("ledger: %w", err)
		}
	}
	l.f, l.size = f, fi.Size()
	if d, err := os.Open(l.dir); err == nil { // make the new name durable
		d.Sync()
		d.Close()
	}
	return nil
}

// Append records r and returns once it is on disk.
func (l *Ledger) Append(r *Record) error {
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.apply(r)
	l.mu.Unlock()
	p := &pending{line: append(line, '\n'), durable: r.Endpoint != "catalog", done: make(chan error, 1)}
	select {
	case l.queue <- p:
	case <-l.closed:
		return errClosed
	}
	if !p.durable {
		return nil // a listing: queued, written within moments, fsynced within lazySync
	}
	select {
	case err := <-p.done:
		return err
	case <-l.stopped:
		return errClosed
	}
}

var errClosed = errors.New("ledger closed; record not written")

// writer group-commits: it writes every queued record, fsyncs once, and
// acknowledges them all.
func (l *Ledger) writer() {
	defer close(l.stopped)
	tick := time.NewTicker(lazySync)
	defer tick.Stop()
	dirty := false // written but not yet fsynced
	for {
		var batch []*pending
		select {
		case p := <-l.queue:
			batch = append(batch, p)
		case <-tick.C:
			if dirty {
				l.f.Sync()
				dirty = false
			}
			continue
		case <-l.closed:
			if dirty {
				l.f.Sync()
			}
			return
		}
	more:
		for len(batch) < 256 {
			select {
			case p := <-l.queue:
				batch = append(batch, p)
			default:
				break more
			}
		}
		durable := false
		for _, p := range batch {
			durable = durable || p.durable
		}
		err := l.write(batch, durable)
		dirty = err == nil && !durable
		for _, p := range batch {
			p.done <- err
		}
	}
}

func (l *Ledger) write(batch []*pending, sync bool) error {
	var buf bytes.Buffer
	for _, p := range batch {
		buf.Write(p.line)
	}
	if _, err := l.f.Write(buf.Bytes()); err != nil {
		l.log.Error("ledger: write failed", "err", err)
		return err
	}
	if sync {
		if err := l.f.Sync(); err != nil {
			l.log.Error("ledger: fsync failed", "err", err)
			return err
		}
	}
	l.size += int64(buf.Len())
	if l.size > l.opts.MaxFileSize {
		l.rotate()
	}
	return nil
}

// rotate starts a new file headed by a snapshot of the fleet, and drops
// files past Keep: the fleet survives rotation whole.
func (l *Ledger) rotate() {
	l.mu.Lock()
	snap := &Record{Time: time.Now().UTC(), Endpoint: "snapshot", Decision: "snapshot", Snapshot: l.devicesLocked()}
	l.mu.Unlock()
	line, _ := json.Marshal(snap)
	l.f.Close()
	l.seq++
	if err := l.openFile(); err != nil {
		l.log.Error("ledger: rotation failed", "err", err)
		return
	}
	l.f.Write(append(line, '\n'))
	l.f.Sync()
	l.size = int64(len(line) + 1)
	files, _ := l.files()
	for len(files) > l.opts.Keep {
		os.Remove(files[0])
		files = files[1:]
	}
	l.log.Info("ledger: rotated", "file", filepath.Base(l.f.Name()), "devices", len(snap.Snapshot))
}

// Close stops the writer; records not yet acknowledged report an error.
func (l *Ledger) Close() error {
	var err error
	l.closeMu.Do(func() {
		close(l.closed)
		<-l.stopped
		err = l.f.Close()
	})
	return err
}

// apply folds a record into the fleet table. Called with mu held (or
// during replay).
func (l *Ledger) apply(r *Record) {
	if r.Snapshot != nil {
		l.devices = map[string]*Device{}
		for _, d := range r.Snapshot {
			l.devices[d.MAC] = d
		}
		return
	}
	if r.MAC == "" {
		return // catalog requests carry no MAC: nothing to attach them to
	}
	d := l.devices[r.MAC]
	if d == nil {
		d = &Device{MAC: r.MAC, FirstSeen: r.Time}
		l.devices[r.MAC] = d
	}
	d.IP, d.LastSeen, d.Requests = r.Client, r.Time, d.Requests+1
	if r.Family != "" {
		d.Family = r.Family
	}
	if r.SDK != "" {
		d.SDK = r.SDK
	}
	if r.Digest != "" {
		// A check-in after an update tells whether it took.
		if d.State == StateSent || d.State == StateCut {
			switch {
			case contains(d.SentMD5s, r.Digest):
				d.State = StateConfirmed
			case r.Digest == d.PrevDigest:
				d.State = StateFailed
			}
		} else if d.State == StateConfirmed && !contains(d.SentMD5s, r.Digest) && r.Digest == d.PrevDigest {
			d.State = StateFailed // rolled back after confirming
		}
		d.Digest, d.Running = r.Digest, r.Running
	}
	d.Decision, d.Reason = r.Decision, r.Reason
	if r.Decision == "serve" {
		d.Sent, d.SentMD5s, d.PrevDigest = r.Image, r.ImageMD5s, r.Digest
		if r.Completed {
			d.State = StateSent
		} else {
			d.State = StateCut
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// Devices returns the fleet, most recently seen first.
func (l *Ledger) Devices() []*Device {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.devicesLocked()
}

func (l *Ledger) devicesLocked() []*Device {
	out := make([]*Device, 0, len(l.devices))
	for _, d := range l.devices {
		c := *d
		out = append(out, &c)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].LastSeen.Equal(out[j].LastSeen) {
			return out[i].LastSeen.After(out[j].LastSeen)
		}
		return out[i].MAC < out[j].MAC
	})
	return out
}

// Device returns one device by MAC.
func (l *Ledger) Device(mac string) (*Device, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	d, ok := l.devices[mac]
	if !ok {
		return nil, false
	}
	c := *d
	return &c, true
}

// Read replays dir without opening it for writing: `otabox devices`.
func Read(dir string, log *slog.Logger) ([]*Device, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Ledger{dir: dir, log: log, devices: map[string]*Device{}}
	files, err := l.files()
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("ledger %s: %w", dir, err)
		}
	}
	if err := l.replayAll(files); err != nil {
		return nil, err
	}
	return l.devicesLocked(), nil
}
