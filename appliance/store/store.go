// Package store is the fleet record: which device asked for what, what it
// was answered and what it runs now, kept in one SQLite database
// (otabox.db, WAL mode, through the pure-Go modernc.org/sqlite) in the data
// directory. It observes decisions; it never makes one.
//
// Durability: a firmware decision (serve, 304, refusal) is committed with
// synchronous=FULL before its response's first byte goes out (Decided
// blocks until then), so a device that received any byte of an image is in
// the record after any crash; the download's outcome (bytes, completed or
// cut off) is committed when the response ends, and a download whose end
// was never recorded is marked interrupted at the next start. Catalog
// listings carry no device identity: they are queued without making the
// device wait and committed with the next batch (at most a second later).
// One writer group-commits: every record that arrived meanwhile shares one
// transaction and one fsync.
//
// Faults never stop device service: a record that cannot be written (disk
// full, read-only file system, I/O error) is dropped and counted, one WARN
// line a minute says so, and writing resumes by itself when the fault
// clears. A database that is damaged at start-up is moved aside and a fresh
// one created.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	_ "modernc.org/sqlite" // the database/sql driver "sqlite", pure Go

	"otabox/appliance/lograte"
)

// FileName is the database's name inside the data directory.
const FileName = "otabox.db"

// Limits on what a device or LAN client can make the store hold. Every
// string a request supplies is cut to these before it is stored.
const (
	MaxString = 64  // MACs, client addresses, SDK versions, digests, ...
	MaxText   = 256 // request-targets, reasons, image paths
)

// Event is one answered device request.
type Event struct {
	ID        int64     `json:"id"`
	Time      time.Time `json:"time"`
	Client    string    `json:"client"`
	MAC       string    `json:"mac,omitempty"`
	Family    string    `json:"family,omitempty"`
	Method    string    `json:"method"`
	Endpoint  string    `json:"endpoint"` // catalog, firmware, update, other
	Target    string    `json:"target"`
	Decision  string    `json:"decision"` // serve, no-update, refuse, list, error
	Status    int       `json:"status"`
	Reason    string    `json:"reason,omitempty"`
	Image     string    `json:"image,omitempty"`   // served or considered
	Digest    string    `json:"digest,omitempty"`  // what the device reported running
	Running   string    `json:"running,omitempty"` // the catalog image that digest is
	SDK       string    `json:"sdk,omitempty"`
	FreeSpace int64     `json:"free_space"` // -1: not sent
	ChipSize  int64     `json:"chip_size"`  // -1: not sent
	Bytes     int64     `json:"bytes"`
	Size      int64     `json:"size"`
	Completed bool      `json:"completed"`
	Finished  bool      `json:"finished"` // false while a download runs
	Took      int64     `json:"took_ms"`  // the longest, for folded listings
	// Repeats is how many identical requests the row stands for: catalog
	// listings without a MAC that one commit (up to 100 ms) received
	// from the same client with the same answer are one row. 1 otherwise.
	Repeats int64 `json:"repeats"`

	// ImageDigests are the served image's running digests (what the device
	// reports once it runs it); kept on the device, not the event.
	ImageDigests []string `json:"-"`
	// Chip is the device's chip when known (its running image's).
	Chip string `json:"-"`
	// FSDigest is the SHA-256 of the filesystem image served, "" when the
	// image is firmware. A filesystem download leaves the device's update
	// state alone; sent whole, it becomes the device's Filesystem.
	FSDigest string `json:"-"`
	// Batch is the open factory batch the decision was made under; nil
	// for none. Its record is kept in batch_devices, not on the event.
	Batch *BatchEvent `json:"-"`
}

// Update states of a device.
const (
	StateNone      = ""          // never sent an image
	StateSent      = "sent"      // an image went out whole; not yet seen running it
	StateCut       = "cut-off"   // a download stopped part-way
	StateConfirmed = "confirmed" // checked in running the image it was sent
	StateFailed    = "failed"    // checked in still running what it ran before
)

// Device is what the store knows of one device, by MAC.
type Device struct {
	MAC         string    `json:"mac"`
	IP          string    `json:"ip"`
	Family      string    `json:"family,omitempty"`
	Chip        string    `json:"chip,omitempty"`
	FirstSeen   time.Time `json:"first_seen"`
	LastSeen    time.Time `json:"last_seen"`
	Running     string    `json:"running,omitempty"`
	Digest      string    `json:"digest,omitempty"`
	SDK         string    `json:"sdk,omitempty"`
	Decision    string    `json:"decision,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	State       string    `json:"state"`
	Sent        string    `json:"sent,omitempty"`
	SentDigests []string  `json:"sent_digests,omitempty"`
	PrevDigest  string    `json:"prev_digest,omitempty"`
	SentAt      time.Time `json:"sent_at,omitzero"`
	Requests    int64     `json:"requests"`
	Downloads   int64     `json:"downloads"`
	Failures    int64     `json:"failures"`
	HeldUntil   time.Time `json:"held_until,omitzero"`
	// Downloading is set while a download to it is running.
	Downloading string `json:"downloading,omitempty"`
	// Filesystem is the filesystem image it last received whole, by path
	// and SHA-256 (devices report none of their own: this is otabox's
	// word, not the device's), and when.
	Filesystem       string    `json:"filesystem,omitempty"`
	FilesystemSHA256 string    `json:"filesystem_sha256,omitempty"`
	FilesystemAt     time.Time `json:"filesystem_at,omitzero"`
}

// Options tune a Store.
type Options struct {
	Logger *slog.Logger
	// KeepEvents bounds the events table (default 1,000,000 rows); KeepAge
	// drops events older than this (default 180 days). Devices are never
	// forgotten by retention.
	KeepEvents int64
	KeepAge    time.Duration
	// MaxDevices bounds the devices table (default 100,000): past it, events
	// of new MACs are kept but no new device is added.
	MaxDevices int64
	// WaitDurable bounds how long Decided waits for its commit before the
	// device is answered anyway (default 5 s).
	WaitDurable time.Duration
	// Replicated says Litestream reads the record's WAL to replicate it
	// (package replica) and checkpoints it itself: the writer then leaves
	// its quiet-second checkpoints out (a TRUNCATE checkpoint would wait
	// on Litestream's read lock for busy_timeout at every tick).
	Replicated bool
	// Now is the clock (tests).
	Now func() time.Time
	// linger replaces lingerFor (tests).
	linger time.Duration
}

// Store is the open fleet record. A nil *Store records nothing and reads
// empty, so callers need not care whether a data dir was given.
type Store struct {
	dir  string
	opts Options
	log  *slog.Logger
	db   atomic.Pointer[sql.DB] // nil until open (or while it cannot be)

	queue chan *op
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once

	stmtMu sync.Mutex
	stmtDB *sql.DB
	stmts  map[string]*sql.Stmt

	cache rowCache // the writer's
	// macs is every MAC in the devices table as of the writer's last
	// transaction or tick, and the MACs it is writing: kept by the writer,
	// asked by Hold, so that a device never seen costs no query.
	macs macSet

	dropped   atomic.Int64 // records that could not be written
	truncated atomic.Int64 // strings cut to the limits
	written   atomic.Int64
	commits   atomic.Int64
	listings  gathered      // catalog listings without a MAC, waiting for the writer
	flush     chan struct{} // asks the writer to commit what lingers now
	lookups   chan func()   // queries asked on every request, run by lookup
	filesMu   sync.Mutex
	filesQ    []fileRow  // remembered files waiting for flushFiles
	flushMu   sync.Mutex // held while flushFiles writes
	// filesKept is false while the files table is known to be empty (a
	// first start): Lookup then misses without asking SQLite, 10,000
	// times. Only this process writes the table (flushFiles).
	filesKept atomic.Bool
	// startRows are the files table's rows, read in one query at the
	// first Lookup and kept briefly (fromStartRows).
	startMu   sync.Mutex
	startRead bool
	startRows map[string]startRow
	// copying counts the copy batches begun and not yet synced: their
	// temporary files are not a crash's leftovers (PruneCopies).
	copying   atomic.Int64
	faultMu   sync.Mutex
	fault     string       // the last write error, "" when writing works
	faultLog  lograte.Gate // faults begun, said once a minute
	faultSaid bool         // the current or last fault was logged
	lost      string       // what was found lost of the record (durable.go); guarded by faultMu

	// Durability (durable.go). recordID and commitsN are the database's
	// identity and the writer's commits to it; sinceCheckpoint and
	// lastCommit are the writer's own.
	commitsMu       sync.Mutex
	commitsF        *os.File
	recordID        string
	commitsN        int64
	sinceCheckpoint int
	lastCommit      time.Time
	checkpoints     atomic.Int64

	lock *os.File // the data dir's shared lock (LockFile), held while open
}

// ErrUnavailable reports a read while the database cannot be opened.
var ErrUnavailable = errors.New("the fleet record is not available")

type opKind uint8

const (
	opDecided  opKind = iota // a firmware decision: insert the event, fold into the device
	opFinished               // a download ended: its bytes and outcome
	opListing                // a catalog request or other non-decision
	opRetry                  // clear a device's hold-back
)

type op struct {
	kind opKind
	ev   *Event
	mac  string
	id   chan int64 // opDecided: the event's id, or -1 when it was dropped
}

// Open opens (creating if needed) the store in dir and starts its writer.
// It fails only when dir itself cannot be made; a database that cannot be
// opened or is damaged is handled in the background and reported in the
// log and Health, and devices are served meanwhile.
func Open(dir string, opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.KeepEvents <= 0 {
		opts.KeepEvents = 1_000_000
	}
	if opts.KeepAge <= 0 {
		opts.KeepAge = 180 * 24 * time.Hour
	}
	if opts.MaxDevices <= 0 {
		opts.MaxDevices = 100_000
	}
	if opts.WaitDurable <= 0 {
		opts.WaitDurable = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.linger <= 0 {
		opts.linger = lingerFor
	}
	s := &Store{dir: dir, opts: opts, log: opts.Logger, queue: make(chan *op, 8192), stop: make(chan struct{}), done: make(chan struct{})}
	s.listings.kick = make(chan struct{}, 1)
	s.flush = make(chan struct{}, 1)
	s.cache.known = &s.macs
	s.cache.walPath = s.Path() + "-wal"
	s.lookups = make(chan func())
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("store %s: %w", dir, err)
	}
	if l, err := lockShared(dir); err != nil {
		// otabox restore is replacing the record: serve, and say so.
		s.log.Warn("store: the data dir is locked by otabox restore", "dir", dir, "err", err)
	} else {
		s.lock = l
	}
	if err := s.open(); err != nil {
		s.setFault(err)
		s.log.Error("store: cannot open the fleet record; devices are served, records are counted as dropped until it opens", "dir", dir, "err", err)
	}
	go s.writer()
	for range lookupGoroutines() {
		go s.lookup()
	}
	return s, nil
}

// lookupGoroutines is how many goroutines run the queries every device
// request asks (Hold): as many as run at once.
func lookupGoroutines() int { return runtime.GOMAXPROCS(0) }

// lookup runs queries until the store closes. SQLite runs in Go here
// (modernc.org/sqlite), and its engine needs a deep stack: run on each
// request's own goroutine, a query grew a thousand of them at the start
// of a fleet update (7 MB of stacks measured at 1,000 devices); here it
// grows a few.
func (s *Store) lookup() {
	for {
		select {
		case f := <-s.lookups:
			f()
		case <-s.stop:
			return
		}
	}
}

// Path is the database file.
func (s *Store) Path() string { return filepath.Join(s.dir, FileName) }

// pageCache bounds each connection's page cache to 512 KiB (SQLite's
// default is 2,000 KiB). The cache is outside Go's heap and its
// --memory-limit, and the pool holds four connections. On the small board
// (GOMAXPROCS=1), three runs each, alternated: after three rounds of
// fresh-MAC downloads the server's anonymous memory was 21.3-22.4 MB
// against 23.0-26.3 MB with the default; then 1,000 devices at 20 KB/s
// peaked at 60.5-62.7 MB of RSS against 58.9-67.8, and left 23.7-24.8 MB
// anonymous against 29.3-35.2. Download CPU and a 10,000-file restart
// showed no change. A page missed is read from the kernel's page cache.
const pageCache = "&_pragma=cache_size(-512)"

// memTemp keeps SQLite's temporary files in memory. The one the record
// uses is the statement journal: a multi-row insert or upsert copies each
// page it changes there first, so that a failed row can undo the
// statement alone, and past 64 KiB SQLite spills that copy to a file in
// /var/tmp (on a Pi, the SD card). In memory it is at most the pages one
// statement of at most listingRows (32) rows changes, freed when the
// statement ends. No query here builds a large temporary table (sorts use
// SQLite's sorter, which spills to a file whatever this says). Under
// strace, 50,000 fresh-MAC listings made 94,635 pwrite calls with the
// file and 17,949 without (BenchmarkStoreListings/fresh-mac).
const memTemp = "&_pragma=temp_store(MEMORY)"

// dsn is the database's URI for the driver, with each connection's
// pragmas.
func dsn(path string, readOnly bool) string {
	u := fileURI(path)
	if readOnly {
		return u + "?_pragma=busy_timeout(5000)&_pragma=query_only(1)" + pageCache + memTemp
	}
	// SQLite checkpoints the WAL itself every 1,000 pages (4 MB, its
	// default) and cuts the file back to 4 MB after; the writer
	// checkpoints after every quiet second (durable.go). At 256 pages a
	// fresh-MAC download wrote 20-21 KB to disk, 18-19 KB at 1,000: each
	// checkpoint writes a page once however many commits changed it.
	return u + "?_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)&_txlock=immediate&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)" +
		"&_pragma=wal_autocheckpoint(1000)&_pragma=journal_size_limit(4194304)" + pageCache + memTemp
}

var uriEscaper = strings.NewReplacer("%", "%25", "?", "%3F", "#", "%23")

// fileURI is path as a URI for the driver, without parameters. The path
// is escaped: in a URI a '#' or '?' would end it, and a data dir named
// "site#2" would open "site" instead.
func fileURI(path string) string { return "file:" + uriEscaper.Replace(path) }

// pageSize is a new record's page size, half SQLite's default. Each
// commit writes every page it changed, whole, to the WAL, and a download's
// decision and end change a few pages of the devices and events tables
// and their indexes: in eight alternated rounds of fresh-MAC downloads a
// download wrote 12-13 KB to disk at 2 KB pages against 18-19 KB at 4 KB,
// its CPU within the rounds' noise (medians 830 and 820 µs). A device
// row (310 bytes on average, 423 at most, in a record of 23,000) still
// fits in its page: the devices table is an index b-tree (WITHOUT ROWID),
// which moves what a row has past 488 bytes at 2 KB (231 at 1 KB) to an
// overflow page. The files table's rows of a 10,000-file catalog (1,202
// bytes, an overflow page each at either size) took 22.8 MB instead of
// 45.7; in 16 alternated restarts each, in three sets, a restart listed
// them in a median 1,059 ms against 1,005 (per set 897/908, 1,078/978,
// 1,112/1,117): no consistent difference.
const pageSize = 2048

// create makes an empty database file in WAL mode with pageSize-byte
// pages. A page size can be set only before the file's first page is
// written, and the driver runs a DSN's pragmas in alphabetical order, so
// dsn's journal_mode(WAL) would write that page first at 4 KB. A record
// created before keeps its 4 KB pages.
func create(path string) error {
	db, err := sql.Open("sqlite", fileURI(path)+"?_pragma=page_size("+strconv.Itoa(pageSize)+")")
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.Exec(`PRAGMA journal_mode=WAL`)
	return err
}

// open opens the database, moving a damaged one aside, migrates it,
// imports a previous release's ledger, and closes out downloads whose end
// a crash kept from being recorded.
func (s *Store) open() error {
	path := s.Path()
	s.preflight(path)
	db, err := s.openChecked(path)
	if err != nil {
		var damaged damagedError
		if !errors.As(err, &damaged) {
			return err
		}
		aside := fmt.Sprintf("%s.damaged-%s", path, s.opts.Now().UTC().Format("20060102T150405Z"))
		if rerr := os.Rename(path, aside); rerr != nil {
			return fmt.Errorf("store %s is damaged (%v) and cannot be moved aside: %w", path, damaged.err, rerr)
		}
		for _, suffix := range []string{"-wal", "-shm"} {
			os.Rename(path+suffix, aside+suffix)
		}
		s.log.Error("store: the fleet record was damaged; moved it aside and started a fresh one", "damaged", aside, "reason", damaged.err)
		if db, err = s.openChecked(path); err != nil {
			return err
		}
	}
	if err := s.importLedger(db); err != nil {
		s.log.Error("store: importing the previous release's ledger failed; its files are left in place", "err", err)
	}
	if err := s.checkCommits(db); err != nil {
		db.Close()
		return err
	}
	if n, err := s.recoverUnfinished(db); err != nil {
		db.Close()
		return err
	} else if n > 0 {
		s.log.Warn("store: downloads interrupted by the last stop were marked cut-off", "downloads", n)
	}
	var one int
	s.filesKept.Store(db.QueryRow(`SELECT 1 FROM files LIMIT 1`).Scan(&one) != sql.ErrNoRows)
	s.db.Store(db)
	var devices int64
	db.QueryRow(`SELECT count(*) FROM devices`).Scan(&devices)
	s.log.Info("store opened", "file", path, "devices", devices)
	return nil
}

// damagedError marks a database file that exists but cannot be used.
type damagedError struct{ err error }

func (d damagedError) Error() string { return d.err.Error() }

func (s *Store) openChecked(path string) (*sql.DB, error) {
	switch fi, err := os.Stat(path); {
	case err == nil && !fi.Mode().IsRegular():
		return nil, damagedError{fmt.Errorf("%s is a %s, not a database file", path, fi.Mode().Type())}
	case errors.Is(err, fs.ErrNotExist):
		if err := create(path); err != nil {
			return nil, fmt.Errorf("store %s: %w", path, err)
		}
	}
	db, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	// The writer and the lookup goroutines each hold a connection while
	// devices are served; with database/sql's default of two idle ones,
	// every third one returned was closed, opened again (its pragmas run)
	// and each prepared statement prepared on it again: 2 % of a fresh-MAC
	// download's CPU in a profile.
	db.SetMaxOpenConns(4)
	db.SetMaxIdleConns(4)
	db.SetConnMaxIdleTime(time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var check string
	if err := db.QueryRowContext(ctx, `PRAGMA quick_check`).Scan(&check); err != nil {
		db.Close()
		if isDamage(err) {
			return nil, damagedError{err}
		}
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	if check != "ok" {
		db.Close()
		return nil, damagedError{fmt.Errorf("quick_check: %s", firstLine(check))}
	}
	if err := migrate(ctx, db); err != nil {
		db.Close()
		if isDamage(err) {
			return nil, damagedError{err}
		}
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	return db, nil
}

// isDamage tells a damaged file from a fault of the machine (permissions,
// a full disk), which moving the file aside would not cure.
func isDamage(err error) bool {
	msg := err.Error()
	for _, s := range []string{"not a database", "malformed", "corrupt", "SQLITE_CORRUPT", "SQLITE_NOTADB", "file is not"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

// Decided records a firmware decision and returns once it is committed,
// with the event's id for Finished. A decision that could not be made
// durable within WaitDurable is counted as dropped and 0 is returned: the
// device is answered all the same.
func (s *Store) Decided(ev *Event) int64 {
	if s == nil {
		return 0
	}
	id, ok := s.Decide(ev)()
	if !ok {
		s.log.Warn("store: a decision was not committed in time; the device is answered anyway", "wait", s.opts.WaitDurable)
	}
	return id
}

// Decide queues a firmware decision for the writer's next commit and
// returns at once; durable waits (up to WaitDurable) for that commit and
// returns the event's id, or false when the decision was dropped or not
// committed in time. It may be called more than once (one goroutine): the
// first answer is kept. A download streams while the commit runs and
// calls durable only before its last bytes (httpapi's HoldBack).
func (s *Store) Decide(ev *Event) (durable func() (id int64, ok bool)) {
	if s == nil {
		return func() (int64, bool) { return 0, false }
	}
	o := &op{kind: opDecided, ev: s.bound(ev), id: make(chan int64, 1)}
	queued := s.enqueue(o, true)
	var id int64
	done := !queued
	return func() (int64, bool) {
		if !done {
			done = true
			t := time.NewTimer(s.opts.WaitDurable)
			defer t.Stop()
			select {
			case id = <-o.id:
			case <-t.C: // still queued or committing: not durable yet, said by the caller
			}
		}
		return max(id, 0), id > 0
	}
}

// Acted records an operator's action from the status page (an upload, a
// retry, a batch opened or closed) as an event of endpoint "admin", and
// returns once it is committed (0 when it could not be). Its Client says
// who and from where; it touches no device row, so that a retry does not
// look like a check-in.
func (s *Store) Acted(ev *Event) int64 {
	if s == nil {
		return 0
	}
	c := *ev
	c.Endpoint, c.MAC, c.FreeSpace, c.ChipSize = "admin", "", -1, -1
	return s.Decided(&c)
}

// Finished records how a decided download's response ended (bytes sent,
// completed or cut off). It returns once the record is queued, not
// committed: the response is over, and its connection may take the
// device's next request at once. The end lingers with the listings (up
// to lingerFor) and is committed with the next decision. Until then the
// device's record says a download is pending, and Hold reports it (and
// has it committed at once): a check-in in that moment waits for the end
// to be written, so it is still judged on how that download ended (a
// second failure holds an image back). Close commits everything queued.
func (s *Store) Finished(id int64, ev *Event) {
	if s == nil || id <= 0 || ev.Decision != "serve" {
		return
	}
	ev = s.bound(ev)
	ev.ID = id
	s.enqueue(&op{kind: opFinished, ev: ev}, true) // nobody waits: no id channel
}

// Record keeps a request that decides nothing (a catalog listing) without
// waiting for it. One without a MAC is gathered (see gathered) and
// written with the writer's next commit; one with a MAC is queued, to be
// folded into its device.
func (s *Store) Record(ev *Event) {
	if s == nil {
		return
	}
	if ev.MAC != "" {
		s.enqueue(&op{kind: opListing, ev: s.bound(ev)}, false)
		return
	}
	if !s.listings.add(ev, s.bound) {
		s.drop(1, errors.New("too many distinct catalog listings waiting to be written"))
	}
}

// Retry clears a device's hold-back and failure count, so that its next
// check-in may be sent the image again, and reports whether there was one
// to clear. It returns once that is committed (or could not be): a reload
// that clears holds says so only afterwards, with the count of holds
// actually cleared.
func (s *Store) Retry(mac string) (cleared bool) {
	if s == nil {
		return false
	}
	o := &op{kind: opRetry, mac: strings.ToUpper(mac), id: make(chan int64, 1)}
	if !s.enqueue(o, true) {
		return false
	}
	select {
	case n := <-o.id:
		return n > 0
	case <-time.After(s.opts.WaitDurable):
		return false
	}
}

// enqueue hands o to the writer. A listing is dropped (and counted) when
// the queue is full; a decision or outcome waits for room, but not past
// shutdown.
func (s *Store) enqueue(o *op, wait bool) bool {
	select {
	case s.queue <- o:
		return true
	default:
	}
	if wait {
		select {
		case s.queue <- o:
			return true
		case <-s.stop:
		case <-time.After(s.opts.WaitDurable):
		}
	}
	s.drop(1, errors.New("the write queue is full"))
	if o.id != nil {
		o.id <- -1
	}
	return false
}

// bound copies ev with every string cut to its limit.
func (s *Store) bound(ev *Event) *Event {
	c := *ev
	for _, f := range []*string{&c.Client, &c.MAC, &c.Family, &c.Method, &c.Endpoint, &c.Decision, &c.Digest, &c.SDK, &c.Chip, &c.FSDigest} {
		*f = s.cut(*f, MaxString)
	}
	for _, f := range []*string{&c.Target, &c.Reason, &c.Image, &c.Running} {
		*f = s.cut(*f, MaxText)
	}
	if len(c.ImageDigests) > 8 {
		c.ImageDigests = c.ImageDigests[:8]
	}
	ds := make([]string, len(c.ImageDigests))
	for i, d := range c.ImageDigests {
		ds[i] = s.cut(d, MaxString)
	}
	c.ImageDigests = ds
	c.MAC = strings.ToUpper(c.MAC)
	if ev.Batch != nil {
		b := *ev.Batch
		for _, f := range []*string{&b.Name, &b.Chip, &b.Revision, &b.RunningVersion, &b.ImageVersion} {
			*f = s.cut(*f, MaxString)
		}
		c.Batch = &b
	}
	return &c
}

// cut shortens v to at most n bytes on a UTF-8 boundary, counting it.
func (s *Store) cut(v string, n int) string {
	if len(v) <= n {
		return v
	}
	s.truncated.Add(1)
	v = v[:n]
	for len(v) > 0 && !utf8.ValidString(v) {
		v = v[:len(v)-1]
	}
	return v
}

func (s *Store) drop(n int, err error) {
	s.dropped.Add(int64(n))
	s.setFault(err)
}

// setFault notes that records cannot be written. A fault that comes and
// goes (a disk at its limit, a flapping USB stick) is logged at most once
// a minute, with the number of faults since the last line.
func (s *Store) setFault(err error) {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	if s.fault == "" {
		s.faultLog.Count() // a fault begins: episodes are counted, not writes
	}
	s.fault = err.Error()
	if n, due := s.faultLog.Due(s.opts.Now()); due {
		s.faultSaid = true
		s.log.Warn("store: records are not being written; devices are still served", "faults_since_last_warning", n, "dropped_total", s.dropped.Load(), "err", err)
	}
}

// clearFault notes that a write worked again; said only after a fault
// that was said, so the log's last word on the store is always true of it
// but for the minute a warning may wait.
func (s *Store) clearFault() {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	if s.fault != "" {
		if s.faultSaid {
			s.log.Info("store: writing records again", "dropped_total", s.dropped.Load(), "after", s.fault)
			s.faultSaid = false
		}
		s.fault = ""
	}
}

// Health is the store's state for the status page and /metrics.
type Health struct {
	Open      bool   `json:"open"`
	Fault     string `json:"fault,omitempty"` // why records are being dropped now
	Dropped   int64  `json:"dropped"`         // records not written since start
	Truncated int64  `json:"truncated"`       // device-supplied values cut to the limits
	Written   int64  `json:"written"`
	Commits   int64  `json:"commits"` // transactions committed: one fsync each
	// Lost says what was found lost of the record since start (a WAL
	// deleted or damaged, a database emptied); "" when nothing was.
	Lost        string `json:"lost,omitempty"`
	Checkpoints int64  `json:"checkpoints"` // WAL copied into the database file
}

// Health reports whether records are being written.
func (s *Store) Health() Health {
	if s == nil {
		return Health{}
	}
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	return Health{Open: s.db.Load() != nil, Fault: s.fault, Dropped: s.dropped.Load(), Truncated: s.truncated.Load(), Written: s.written.Load(), Commits: s.commits.Load(),
		Lost: s.lost, Checkpoints: s.checkpoints.Load()}
}

// Close writes what is queued and closes the database. Call it after the
// last response has been recorded.
func (s *Store) Close() error {
	if s == nil {
		return nil
	}
	var err error
	s.once.Do(func() {
		close(s.stop)
		<-s.done
		s.flushFiles()
		if db := s.db.Load(); db != nil {
			err = db.Close()
		}
		s.closeCommits()
		if s.lock != nil {
			s.lock.Close()
		}
		s.log.Info("store closed", "written", s.written.Load(), "dropped", s.dropped.Load())
	})
	return err
}
