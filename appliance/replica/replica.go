// Package replica keeps the fleet record safe beyond the box: it streams
// the record's SQLite database, as it is written, to storage the site
// already has (a folder on a USB stick or a mounted share, a NAS over
// SFTP, an S3-compatible store), and brings it back onto a new box.
//
// The work is Litestream's (github.com/benbjohnson/litestream, Apache-2.0,
// embedded as a library): it reads the record's write-ahead log as SQLite
// writes it and ships each transaction's pages as LTX files, compacted
// in levels (30 s, 5 min, 1 h) and into a daily snapshot. This package
// only wires it to otabox: one replica per record (Litestream keeps one
// per database), a replica that cannot be reached never stops devices
// being served (replication starts and retries in the background), and
// what the replica lags and why is said in Status.
package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/benbjohnson/litestream"
	"github.com/benbjohnson/litestream/file"
	"github.com/benbjohnson/litestream/s3"
	"github.com/benbjohnson/litestream/sftp"
)

// Options say where the record goes.
type Options struct {
	// URL is file:///path, sftp://user@host[:port]/path or
	// s3://bucket/path (?endpoint=http://host:port for an S3-compatible
	// store; credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
	// or the AWS configuration files, as Litestream takes them).
	URL string
	// SSHKey is the private key file an sftp replica logs in with.
	SSHKey string
	// HostKey is an sftp server's public key, in authorized_keys form
	// ("ssh-ed25519 AAAA..."): the connection is refused unless the
	// server shows it. Required for sftp: a box that sent its record to
	// whoever answered would not keep it safe.
	HostKey string
	// Logger gets Litestream's lines; nil discards them.
	Logger *slog.Logger
}

// Redacted is the URL as logs and the page show it: without a password.
func Redacted(raw string) string {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return "(a URL that does not parse)"
	case u.Opaque != "":
		return u.Scheme + ":…" // not a URL of a replica; whatever follows is not shown
	}
	return u.Redacted()
}

// client makes the Litestream client for o.URL, configured and checked.
func client(o Options) (litestream.ReplicaClient, error) {
	u, err := url.Parse(o.URL)
	if err != nil {
		// Not the URL itself: it may carry a password.
		if ue, ok := err.(*url.Error); ok {
			err = ue.Err
		}
		return nil, fmt.Errorf("replica URL: %w", err)
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("replica %s: a file URL names a local folder (file:///path), not host %q", o.URL, u.Host)
		}
		if !filepath.IsAbs(u.Path) {
			return nil, fmt.Errorf("replica %s: the folder must be an absolute path (file:///media/usb/otabox)", o.URL)
		}
		return file.NewReplicaClient(u.Path), nil
	case "sftp":
		c, err := litestream.NewReplicaClientFromURL(o.URL)
		if err != nil {
			return nil, fmt.Errorf("replica %s: %w", Redacted(o.URL), err)
		}
		sc := c.(*sftp.ReplicaClient)
		if o.HostKey == "" {
			return nil, fmt.Errorf("replica %s: the SFTP server's host key is required (--replicate-host-key \"$(ssh-keyscan -t ed25519 %s | cut -d' ' -f2-)\")", Redacted(o.URL), u.Hostname())
		}
		sc.HostKey = o.HostKey
		if o.SSHKey != "" {
			if _, err := os.Stat(o.SSHKey); err != nil {
				return nil, fmt.Errorf("replica %s: ssh key: %w", Redacted(o.URL), err)
			}
			sc.KeyPath = o.SSHKey
		} else if sc.Password == "" {
			return nil, fmt.Errorf("replica %s: an SFTP replica needs --replicate-ssh-key (or a password in the URL)", Redacted(o.URL))
		}
		sc.DialTimeout = 10 * time.Second
		return sc, nil
	case "s3":
		if os.Getenv("AWS_CA_BUNDLE") != "" {
			// Litestream gives the AWS SDK an HTTP client of its own, and
			// the SDK then fails on AWS_CA_BUNDLE at every connection.
			return nil, fmt.Errorf("replica %s: AWS_CA_BUNDLE is set, and Litestream's S3 client cannot use it: unset it for otabox (an endpoint whose certificate the system does not trust is not supported)", Redacted(o.URL))
		}
		c, err := litestream.NewReplicaClientFromURL(o.URL)
		if err != nil {
			return nil, fmt.Errorf("replica %s: %w", Redacted(o.URL), err)
		}
		return c.(*s3.ReplicaClient), nil
	}
	return nil, fmt.Errorf("replica %s: otabox replicates to file://, sftp:// and s3:// URLs, not %q", Redacted(o.URL), u.Scheme+":")
}

// Check tells whether o would make a replica client, without touching
// the network: for refusing a flag at start-up.
func Check(o Options) error {
	_, err := client(o)
	return err
}

// levels are Litestream's own defaults: a transaction is in the replica
// within a second (level 0), compacted to 30 s, 5 min and 1 h files.
var levels = func() litestream.CompactionLevels {
	return litestream.CompactionLevels{
		{Level: 0},
		{Level: 1, Interval: 30 * time.Second},
		{Level: 2, Interval: 5 * time.Minute},
		{Level: 3, Interval: time.Hour},
	}
}

// Replicator streams one database to one replica.
type Replicator struct {
	url    string // redacted
	db     *litestream.DB
	store  *litestream.Store
	log    *slog.Logger
	notes  *notes
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	opened bool
	// seen is when the record first held each transaction the replica
	// lacks, oldest first: how far behind the replica is is the age of
	// the first, not how long it has been short of the newest (under a
	// steady stream of writes it always is, by a second).
	seen []txSeen
}

// Start begins replicating the database at path (which the caller, the
// record's store, has opened and keeps writing). It fails only on a URL
// that cannot be used; a replica that cannot be reached is retried in
// the background and reported in Status.
func Start(path string, o Options) (*Replicator, error) {
	c, err := client(o)
	if err != nil {
		return nil, err
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &notes{}
	llog := slog.New(noting{log.Handler(), n}).With("replica", Redacted(o.URL))
	db := litestream.NewDB(path)
	db.Replica = litestream.NewReplicaWithClient(db, c)
	// The record's store checkpoints itself when nothing replicates;
	// here Litestream does (it must read the WAL before it is copied
	// back): a passive checkpoint past 1,024 pages (4 MB), as the
	// store's own cap, and every minute.
	db.MinCheckpointPageN = 1024
	st := litestream.NewStore([]*litestream.DB{db}, levels())
	st.Logger = llog
	db.SetLogger(llog)
	r := &Replicator{url: Redacted(o.URL), db: db, store: st, log: log, notes: n, stop: make(chan struct{}), done: make(chan struct{})}
	go r.run()
	return r, nil
}

// run opens the Litestream store, retrying while the replica cannot be
// reached, then watches how far the replica is behind the record.
func (r *Replicator) run() {
	defer close(r.done)
	wait := time.Second
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := r.store.Open(ctx)
		cancel()
		if err == nil {
			break
		}
		r.noteError(err)
		r.log.Warn("replica: cannot start replicating the fleet record; devices are served, it is retried", "replica", r.url, "err", err, "retry_in", wait)
		select {
		case <-r.stop:
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Minute)
	}
	r.mu.Lock()
	r.opened = true
	r.mu.Unlock()
	r.log.Info("replica: streaming the fleet record", "replica", r.url)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.watch()
		}
	}
}

// watch notes, once a second and at each Status, the record's newest
// transaction and drops those the replica now holds.
func (r *Replicator) watch() {
	local, err := r.db.Pos()
	remote := r.db.Replica.Pos().TXID
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		if n := len(r.seen); local.TXID > remote && (n == 0 || uint64(local.TXID) > r.seen[n-1].txid) {
			r.seen = append(r.seen, txSeen{uint64(local.TXID), now})
		}
	}
	i := 0
	for i < len(r.seen) && r.seen[i].txid <= uint64(remote) {
		i++
	}
	r.seen = r.seen[i:]
	if len(r.seen) > 600 { // ten minutes of seconds: the oldest is what counts
		r.seen = append(r.seen[:1], r.seen[len(r.seen)-599:]...)
	}
}

// txSeen is a transaction of the record and when it was first seen.
type txSeen struct {
	txid uint64
	at   time.Time
}

func (r *Replicator) noteError(err error) {
	r.notes.note(err.Error())
}

// Status is the replica's state, for the page, /metrics and /healthz.
type Status struct {
	URL string `json:"url"`
	// Streaming says Litestream runs (the replica was reached once).
	Streaming bool `json:"streaming"`
	// LastSync is when a transaction last reached the replica.
	LastSync time.Time `json:"last_sync,omitzero"`
	// Behind is the age of the oldest transaction Litestream has read
	// from the record's WAL (once a second) and the replica lacks, to a
	// tenth of a second, as often as it is asked and at least once a
	// second; 0 when it holds them all.
	Behind time.Duration `json:"behind_ns"`
	// LocalTXID and RemoteTXID are the record's and the replica's last
	// transactions.
	LocalTXID  uint64 `json:"local_txid"`
	RemoteTXID uint64 `json:"remote_txid"`
	// Err is the last error replicating, while the replica is behind
	// or not streaming; Errors counts them since start.
	Err    string    `json:"error,omitempty"`
	ErrAt  time.Time `json:"error_at,omitzero"`
	Errors int64     `json:"errors"`
	// Held says why the box does not replicate although it was told to
	// (the record could not be restored from the replica first, and
	// streaming a new one would bury it there).
	Held string `json:"held,omitempty"`
}

// Degraded is when the replica is behind for longer than Litestream
// takes to ship a transaction (a second, then compaction): a line for
// /healthz and the page, or "".
func (s Status) Degraded() string {
	switch {
	case s.Held != "":
		return "replication of the fleet record to " + s.URL + " is held back: " + s.Held
	case !s.Streaming:
		return "the fleet record's replica " + s.URL + " is not streaming: " + s.Err
	case s.Behind >= 10*time.Second:
		why := fmt.Sprintf("the fleet record's replica %s is %s behind", s.URL, s.Behind.Round(time.Second))
		if s.Err != "" {
			why += ": " + s.Err
		}
		return why
	}
	return ""
}

// Status says how the replica stands now.
func (r *Replicator) Status() Status {
	if r.isOpen() {
		r.watch() // as of now, not of the last tick
	}
	r.mu.Lock()
	st := Status{URL: r.url, Streaming: r.opened}
	if len(r.seen) > 0 {
		st.Behind = time.Since(r.seen[0].at).Round(100 * time.Millisecond)
	}
	r.mu.Unlock()
	st.LastSync = r.db.LastSuccessfulSyncAt()
	if st.Streaming {
		if p, err := r.db.Pos(); err == nil {
			st.LocalTXID = uint64(p.TXID)
		}
		st.RemoteTXID = uint64(r.db.Replica.Pos().TXID)
	}
	msg, at, n := r.notes.last()
	st.Errors = n
	if !st.Streaming || st.Behind > 0 || (at.After(st.LastSync) && !st.LastSync.IsZero()) {
		st.Err, st.ErrAt = msg, at
	}
	return st
}

func (r *Replicator) isOpen() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.opened
}

// Close ships what the record holds that the replica does not (for up
// to ctx's deadline) and stops replicating. The caller closes the
// record's store after it.
func (r *Replicator) Close(ctx context.Context) error {
	close(r.stop)
	<-r.done
	if !r.isOpen() {
		return nil
	}
	if err := r.store.Close(ctx); err != nil {
		return fmt.Errorf("replica %s: %w", r.url, err)
	}
	return nil
}

// Sync ships the record's transactions to the replica now and returns
// when it holds them (for tests and for a clean shutdown).
func (r *Replicator) Sync(ctx context.Context) error {
	if !r.isOpen() {
		return errors.New("replica " + r.url + " is not streaming yet")
	}
	return r.db.SyncAndWait(ctx)
}

// notes keeps Litestream's last error line and counts them: its
// monitor logs a failing sync (at most every few seconds) and carries
// on, and that line is what the box can say about a replica that is
// behind.
type notes struct {
	mu  sync.Mutex
	msg string
	at  time.Time
	n   int64
}

func (n *notes) note(msg string) {
	n.mu.Lock()
	n.msg, n.at = msg, time.Now()
	n.n++
	n.mu.Unlock()
}

func (n *notes) last() (string, time.Time, int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.msg, n.at, n.n
}

// noting is a slog handler that passes Litestream's lines on and notes
// its errors. Its INFO lines (a compaction, a snapshot, each monitor
// starting) are otabox's DEBUG: the box's own log says when replication
// starts, stalls and recovers.
type noting struct {
	slog.Handler
	n *notes
}

func (h noting) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelError || h.Handler.Enabled(ctx, demote(l))
}

func demote(l slog.Level) slog.Level {
	if l == slog.LevelInfo {
		return slog.LevelDebug
	}
	return l
}

func (h noting) Handle(ctx context.Context, rec slog.Record) error {
	rec.Level = demote(rec.Level)
	if !h.Handler.Enabled(ctx, rec.Level) && rec.Level < slog.LevelError {
		return nil
	}
	if rec.Level >= slog.LevelError {
		msg := rec.Message
		rec.Attrs(func(a slog.Attr) bool {
			if a.Key == "error" || a.Key == "err" {
				msg += ": " + a.Value.String()
			}
			return true
		})
		h.n.note(oneLine(msg))
		if !h.Handler.Enabled(ctx, rec.Level) {
			return nil
		}
	}
	return h.Handler.Handle(ctx, rec)
}

func (h noting) WithAttrs(as []slog.Attr) slog.Handler {
	return noting{h.Handler.WithAttrs(as), h.n}
}

func (h noting) WithGroup(g string) slog.Handler { return noting{h.Handler.WithGroup(g), h.n} }

func oneLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
