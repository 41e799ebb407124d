// Package appliance wires otabox together: it loads the catalog, opens the
// listener, serves the device endpoints and shuts down gracefully. main
// builds a Config from flags; everything else lives in the sub-packages.
package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"otabox/appliance/catalog"
	"otabox/appliance/discovery"
	"otabox/appliance/espimage"
	"otabox/appliance/httpapi"
	"otabox/appliance/metrics"
	"otabox/appliance/replica"
	"otabox/appliance/store"
	"otabox/appliance/watch"
	"otabox/appliance/web"
)

// Config is everything otabox needs to run.
type Config struct {
	// Addr is the listen address, "host:port"; host "" means every interface.
	Addr string
	// Firmware is the catalog's source: the embedded firmware, or a
	// directory opened with OpenDir.
	Firmware Source
	Logger   *slog.Logger
	// UpdatePath is the fixed update URL ("/update"); "" turns it off.
	UpdatePath string
	// Grace is how long running downloads may take to finish on shutdown.
	Grace time.Duration
	// StallTimeout bounds one write to a device that stopped reading.
	StallTimeout time.Duration
	// Gzip lists path patterns (path.Match, "*" for all) of ESP8266 images
	// to also serve gzip-compressed to devices that can inflate them.
	Gzip []string
	// Settle is how long a file in a --catalog directory must stay
	// unchanged before it is served (default 1 s).
	Settle time.Duration
	// Policy is the policy file ("" for none); SIGHUP re-reads it.
	Policy string
	// DataDir holds the fleet record (otabox.db); "" keeps none.
	DataDir string
	// KeepEvents and KeepAge bound the record's event history (defaults
	// 1,000,000 rows and 180 days); devices are kept regardless.
	KeepEvents int64
	KeepAge    time.Duration
	// VerifyKeys, when set, admit only images whose signature verifies
	// under one of them (--verify-key); the rest stay out with a warning.
	VerifyKeys []*espimage.Key
	// AdminPassword protects the status page and /api/* ("" leaves them
	// open) and turns on the page's actions (upload, remove, retry,
	// batches), which are off without it.
	AdminPassword string
	// MaxUpload bounds an image uploaded from the page (0: 16 MiB).
	MaxUpload int64
	// DeviceAuth, when its Password is set, requires devices to send these
	// credentials (setAuthorization) for firmware and /update.
	DeviceAuth httpapi.DeviceAuth
	// MaxConnsPerIP caps one client address's open connections (0: 16).
	MaxConnsPerIP int
	// MaxConns caps all open connections (0: from RLIMIT_NOFILE, see
	// httpapi.DefaultMaxConns; negative: no cap).
	MaxConns int
	// MinRate cuts off downloads slower than this many bytes/s over 30 s
	// (0: httpapi.DefaultMinRate; negative: never).
	MinRate int64
	// Version is shown on the status page.
	Version string
	// MDNS, when set, advertises the server on the LAN; its Port is filled
	// in from the listener.
	MDNS *discovery.Config
	// Replica, when set, streams the fleet record to it (--replicate),
	// after restoring the record from it onto a data dir that has none.
	Replica *replica.Options
}

// Source is where firmware comes from.
type Source struct {
	FS       fs.FS
	Dir      string    // the directory on disk, watched for changes; "" when embedded
	Name     string    // "embedded" or the directory, for logs
	Embedded bool      // FS holds its files in memory (go:embed)
	Stamp    time.Time // date for files without a build stamp or mtime
	// Manifest describes an embedded FS as built (see catalog.Manifest).
	Manifest *catalog.Manifest
}

// OpenDir opens a catalog directory on disk. Reads go through os.Root, so a
// symlink inside the directory cannot lead outside it.
func OpenDir(dir string) (Source, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return Source{}, fmt.Errorf("catalog %s: %w", dir, err)
	}
	return Source{FS: root.FS(), Dir: dir, Name: dir}, nil
}

// LoadCatalog builds the catalog from src, logging what it skips.
func LoadCatalog(src Source, log *slog.Logger) (*catalog.Catalog, error) {
	return loadCatalog(src, log, load{})
}

// gzip turns the --gzip patterns into the catalog's selector.
func (cfg Config) gzip() func(string) bool {
	if len(cfg.Gzip) == 0 {
		return nil
	}
	return func(p string) bool {
		for _, pat := range cfg.Gzip {
			if ok, _ := path.Match(pat, p); ok || pat == "*" {
				return true
			}
		}
		return false
	}
}

// ValidGzipPattern reports a malformed --gzip pattern.
func ValidGzipPattern(p string) error {
	_, err := path.Match(p, "")
	return err
}

// load is what one catalog load needs besides its source: the catalog it
// replaces (whose entries for unchanged files are reused), files still
// being written (unstable, or on a reload modified within settle), the
// --gzip selector, the --verify-key keys, and rehash to re-read every file.
type load struct {
	prev     *catalog.Catalog
	unstable map[string]bool
	gzip     func(string) bool
	keys     []*espimage.Key
	rehash   bool
	settle   time.Duration
	cache    catalog.DigestCache // nil: read every file
	budget   int64               // catalog.Options.Budget
}

// hashRound is how many bytes of unread disk files one catalog load reads
// before it publishes them: a first start serves the small files within
// a fraction of a second and reads the largest last.
const hashRound = 64 << 20

// startBudget is how many bytes of unread disk files are read before the
// port opens: about 50 ms of hashing on a Raspberry Pi 4.
const startBudget = 16 << 20

func loadCatalog(src Source, log *slog.Logger, l load) (*catalog.Catalog, error) {
	return catalog.Load(src.FS, catalog.Options{
		Rehash:   l.rehash,
		Settle:   l.settle,
		Gzip:     l.gzip,
		Keys:     l.keys,
		Source:   src.Name,
		Logger:   log,
		Embedded: src.Embedded,
		Stamp:    src.Stamp,
		Manifest: src.Manifest,
		Previous: l.prev,
		Unstable: l.unstable,
		Cache:    l.cache,
		Budget:   l.budget,
	})
}

// Appliance is a loaded catalog bound to a listening socket.
type Appliance struct {
	cfg   Config
	log   *slog.Logger
	cat   *catalog.Catalog
	h     *httpapi.Handler
	ln    net.Listener
	srv   *http.Server
	store *store.Store // nil without a data dir
	// replicator streams the record (nil without --replicate, or while
	// replicaHeld says why it must not).
	replicator  *replica.Replicator
	replicaHeld string
	mdns        atomic.Pointer[discovery.Responder]
	dir         *folder // the --catalog folder, nil when embedded

	policyErr   atomic.Pointer[string] // why the last reload was refused
	batchWarned sync.Map               // batch names whose group the policy lacks, warned once
}

// New loads the catalog and opens the listener, so that configuration
// errors surface before anything is served.
func New(cfg Config) (*Appliance, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Grace == 0 {
		cfg.Grace = 30 * time.Second
	}
	start := time.Now()
	var st *store.Store
	var err error
	var held string
	if cfg.Replica != nil {
		if cfg.DataDir == "" {
			return nil, errors.New("--replicate streams the fleet record, and --data-dir \"\" keeps none")
		}
		held = restoreFirst(cfg.DataDir, *cfg.Replica, log)
	}
	if cfg.DataDir != "" {
		// Serving devices comes first: a data dir that cannot be made (a
		// read-only working directory) costs the records, not the updates.
		opts := store.Options{Logger: log, KeepEvents: cfg.KeepEvents, KeepAge: cfg.KeepAge, Replicated: cfg.Replica != nil && held == ""}
		if st, err = store.Open(cfg.DataDir, opts); err != nil {
			log.Error("store unavailable: devices are served but not recorded", "err", err)
			st = nil
		}
	}
	var rep *replica.Replicator
	if cfg.Replica != nil && st != nil && held == "" {
		o := *cfg.Replica
		o.Logger = log
		if rep, err = replica.Start(st.Path(), o); err != nil {
			st.Close()
			return nil, err
		}
	}
	l := load{gzip: cfg.gzip(), keys: cfg.VerifyKeys}
	if cfg.Firmware.Dir != "" {
		// A disk catalog: files the store does not already describe are
		// read smallest first, startBudget of them before the port opens
		// (a small catalog is whole from the first request), the rest
		// after it, in rounds (watch).
		l.budget = startBudget
		if st != nil {
			l.cache = st
		}
	}
	cat, err := loadCatalog(cfg.Firmware, log, l)
	if err != nil {
		st.Close()
		if rep != nil {
			rep.Close(context.Background())
		}
		return nil, err
	}
	images := 0
	for _, e := range cat.Files() {
		if e.Type == catalog.Bin {
			images++
		}
	}
	logGzip(log, cat)
	if len(cfg.VerifyKeys) > 0 {
		var names []string
		for _, k := range cfg.VerifyKeys {
			names = append(names, k.Name+" ("+k.Describe()+")")
		}
		log.Info("signatures: serving only images that verify under "+strings.Join(names, ", "), "verified", images)
	}
	unread, unreadBytes := cat.PendingCount()
	if images == 0 && unread == 0 {
		log.Warn(emptyCatalog(cfg.Firmware))
	}
	stats := cat.Stats()
	log.Info("catalog loaded", "source", cat.Source, "files", len(cat.Files()), "images", images, "read", stats.Read, "from_record", stats.Cached, "to_read", unread, "took", time.Since(start).Round(time.Microsecond))
	if unread > 0 {
		log.Info(fmt.Sprintf("catalog: %d files (%d MB) not seen before are read and hashed after start-up, smallest first; until then a device asking for one gets 503 with Retry-After", unread, unreadBytes>>20))
	}
	a := &Appliance{cfg: cfg, log: log, cat: cat, store: st, replicator: rep, replicaHeld: held}
	if cfg.Firmware.Dir != "" {
		a.dir = newFolder(cfg.Firmware, log)
		removeStaleUploads(cfg.Firmware.Dir, log)
	}
	if cfg.MaxUpload <= 0 {
		cfg.MaxUpload = web.DefaultMaxUpload
	}
	downloads := httpapi.NewDownloads()
	m := metrics.New(metrics.Sources{
		InFlight: downloads.Len,
		States:   a.deviceStates,
		Health:   a.store.Health,
		HeldBack: func() int { n, _ := a.store.HeldBack(context.Background()); return n },
		Paused:   func() map[string]string { return a.h.Policy().Paused() },
		Replica:  a.replicaStatus,
	})
	if cfg.MaxConns == 0 {
		cfg.MaxConns = httpapi.DefaultMaxConns()
	}
	var limiter *httpapi.Limiter
	a.ln, limiter, err = httpapi.Listen(cfg.Addr, httpapi.Limits{PerIP: cfg.MaxConnsPerIP, Total: cfg.MaxConns}, log)
	if err != nil {
		a.closeStore()
		return nil, fmt.Errorf("listen %s: %w", cfg.Addr, err)
	}
	page, err := web.New(web.Sources{
		Version:   cfg.Version,
		BindIP:    a.ln.Addr().(*net.TCPAddr).IP,
		Port:      a.ln.Addr().(*net.TCPAddr).Port,
		Path:      mdnsPath(cfg.MDNS),
		Catalog:   func() *catalog.Catalog { return a.h.Catalog() },
		Store:     a.store,
		Policy:    a.policyView,
		EmptyHelp: emptyCatalog(cfg.Firmware),
		Folder:    a.dir.Fault,
		Samples:   cfg.Firmware.Manifest != nil && cfg.Firmware.Manifest.Samples,
		Downloads: downloads,
		MDNS:      a.mdnsStatus,
		Metrics:   m.Handler(),
		Password:  cfg.AdminPassword,
		Logger:    log,
		Admin:     &admin{a: a, maxUpload: cfg.MaxUpload},
		Removable: cfg.Firmware.Dir != "",
		MaxUpload: cfg.MaxUpload,
		Keys:      len(cfg.VerifyKeys) > 0,
		Replica:   a.replicaStatus,
	})
	if err != nil {
		a.ln.Close()
		a.closeStore()
		return nil, err
	}
	a.h = httpapi.New(cat, httpapi.Options{
		Logger:       log,
		UpdatePath:   cfg.UpdatePath,
		StallTimeout: cfg.StallTimeout,
		MinRate:      cfg.MinRate,
		DeviceAuth:   cfg.DeviceAuth,
		Downloads:    downloads,
		Extra:        page,
		MaxAPI:       maxAPI(cfg.MaxConns),
		Record:       a.record,
		Batch:        a.batchFor,
		Decided: func(ev *httpapi.Exchange) func() bool {
			if a.store == nil {
				return nil // no record, no promise to keep
			}
			durable := a.store.Decide(event(ev))
			return func() bool {
				id, ok := durable()
				ev.RecordID = id
				if !ok {
					a.log.Warn("store: a decision was not recorded in time: a download's last bytes are withheld (the device asks again); any other answer goes out", "client", ev.Client, "target", ev.Target, "status", ev.Status)
				}
				return ok
			}
		},
		Observe: func(ev *httpapi.Exchange) {
			m.Observe(ev)
			if ev.Committed {
				a.store.Finished(ev.RecordID, event(ev))
			} else {
				a.store.Record(event(ev))
			}
		},
	})
	if cfg.Policy != "" {
		p, err := a.loadPolicy()
		if err != nil {
			a.ln.Close()
			a.closeStore()
			return nil, err
		}
		a.h.SetPolicy(p)
		log.Info("policy in force", "file", cfg.Policy, "max_downloads", p.MaxDownloads)
	}
	a.srv = httpapi.Server(a.h, log)
	a.srv.ConnState = limiter.ConnState
	if ip := a.ln.Addr().(*net.TCPAddr).IP; cfg.AdminPassword == "" && !ip.IsLoopback() {
		log.Warn("the status page and /api/* show every device's MAC and IP to anyone on the LAN; set --admin-password-file (or --admin-password) to protect them, or --bind 127.0.0.1", "addr", a.ln.Addr().String())
	}
	return a, nil
}

// maxAPI is how many status and API answers run at once: 32, and never
// more than a quarter of --max-conns, so that devices always keep three
// quarters of the connections.
func maxAPI(maxConns int) int {
	if maxConns <= 0 {
		return httpapi.DefaultMaxAPI
	}
	return max(min(httpapi.DefaultMaxAPI, maxConns/4), 1)
}

func mdnsPath(m *discovery.Config) string {
	if m != nil && m.Path != "" {
		return m.Path
	}
	return "."
}

// closeStore commits what the store holds, then ships it to the replica.
func (a *Appliance) closeStore() {
	a.store.Close()
	a.closeReplica()
}

func (a *Appliance) deviceStates() map[string]int {
	states, err := a.store.States(context.Background())
	if err != nil {
		a.log.Debug("store: device states unavailable", "err", err)
	}
	return states
}

func (a *Appliance) mdnsStatus() discovery.Status {
	if r := a.mdns.Load(); r != nil {
		return r.Status()
	}
	return discovery.Status{}
}

// event turns a device request into the store's record of it.
func event(ev *httpapi.Exchange) *store.Event {
	r := &store.Event{
		Time: ev.Time.UTC(), Client: ev.Client, Method: ev.Method, Endpoint: ev.Endpoint, Target: ev.Target,
		Status: ev.Status, Decision: ev.Decision, Reason: ev.Reason,
		Bytes: ev.Bytes, Size: ev.Size, Completed: ev.Completed, Took: ev.Took.Milliseconds(),
		FreeSpace: -1, ChipSize: -1,
	}
	if d := ev.Device; d != nil {
		if d.Family != espimage.FamilyUnknown {
			r.Family = d.Family.String()
		}
		r.MAC, r.SDK, r.FreeSpace, r.ChipSize = d.MAC(), d.SDKVersion, d.FreeSpace, d.ChipSize
		r.Digest = d.Digest()
	}
	if len(ev.Running) > 0 {
		r.Running = ev.Running[0].Path
		if img := ev.Running[0].Image; img != nil && img.Family == espimage.ESP32 {
			r.Chip = img.Chip.String()
		}
	}
	if e := ev.Image; e != nil {
		r.Image = e.Path
		if e.FS != nil && ev.Device != nil && ev.Device.AsksFilesystem() {
			r.FSDigest = e.SHA256
		}
		if e.Image != nil {
			r.ImageDigests = append(append([]string(nil), e.Image.Digests.RunningMD5...), e.Image.Digests.RunningSHA256)
		}
	}
	if ev.Batch != "" {
		b := &store.BatchEvent{Name: ev.Batch}
		if ev.Device != nil {
			b.Chip, b.Revision = ev.Device.Reported()
		}
		if len(ev.Running) > 0 && ev.Running[0].Image != nil {
			b.RunningVersion = ev.Running[0].Image.Version
		}
		if ev.Image != nil && ev.Image.Image != nil {
			b.ImageVersion = ev.Image.Image.Version
		}
		r.Batch = b
	}
	return r
}

// Addr is the address the appliance listens on.
func (a *Appliance) Addr() net.Addr { return a.ln.Addr() }

// Catalog is the catalog being served.
func (a *Appliance) Catalog() *catalog.Catalog { return a.h.Catalog() }

// Serve serves until ctx is done, then stops accepting and lets running
// downloads finish for up to the grace period.
func (a *Appliance) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- a.srv.Serve(httpapi.Quick(a.ln, a.srv)) }()
	a.log.Info("serving", "addr", a.ln.Addr().String(), "catalog", a.cat.Source)
	if m := a.cfg.Firmware.Manifest; m != nil && m.Samples {
		if tcp, ok := a.ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsLoopback() {
			names := make([]string, 0, len(m.Files))
			for p := range m.Files {
				names = append(names, p)
			}
			sort.Strings(names)
			a.log.Warn("serving otabox's sample images, which do not boot, on a LAN address: a device in reach may flash one (make run keeps them on 127.0.0.1; serve your own with --catalog DIR)",
				"addr", a.ln.Addr().String(), "images", strings.Join(names, " "))
		}
	}
	if a.cfg.Firmware.Manifest != nil {
		go a.verify()
	}
	// SIGHUP re-reads a --catalog directory now; the embedded one cannot change.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{}, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				a.reloadPolicy()
				if a.cfg.Firmware.Dir == "" {
					a.log.Info("SIGHUP: the embedded catalog cannot change; nothing to reload")
					continue
				}
				select {
				case reload <- struct{}{}:
				default:
				}
			}
		}
	}()
	if dir := a.cfg.Firmware.Dir; dir != "" {
		go watch.Run(ctx, watch.Config{
			Dir:     dir,
			Logger:  a.log,
			Settle:  a.cfg.Settle,
			Reload:  reload,
			Load:    a.reloadDir,
			Publish: a.publish,
		}, a.cat)
	}
	if m := a.cfg.MDNS; m != nil {
		mc := *m
		mc.Port = a.ln.Addr().(*net.TCPAddr).Port
		if mc.Logger == nil {
			mc.Logger = a.log
		}
		r, err := discovery.Start(ctx, mc)
		if err != nil {
			a.srv.Close()
			return err
		}
		a.mdns.Store(r)
	}
	select {
	case err := <-errc:
		a.closeStore()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	a.log.Info("shutting down", "grace", a.cfg.Grace)
	sctx, cancel := context.WithTimeout(context.Background(), a.cfg.Grace)
	defer cancel()
	err := a.srv.Shutdown(sctx)
	if err == nil {
		// Shutdown does not wait for the downloads that left net/http
		// (httpapi's detach): the handler does.
		err = a.h.Wait(sctx)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		a.log.Warn("grace period over; cutting off downloads still running", "downloads", a.h.Downloads().Len())
		err = a.srv.Close()
		a.h.CutOff()
	}
	if e := <-errc; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	// Close drops the connections but not the handlers writing to them:
	// wait until each has recorded how its response ended (cut off, with
	// its byte count), then close the store.
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if werr := a.h.Wait(wctx); werr != nil {
		a.log.Error("responses still running after shutdown; their ends are not recorded", "err", werr)
	}
	// The copies of files read so far are written (in the background,
	// after each load) before the record closes: a restart finds them and
	// reads none of those files again.
	a.h.Catalog().WaitCopies()
	a.closeStore()
	return err
}

// reloadDir reads the --catalog folder again for the watcher, wherever
// its path leads now: a folder it did not lead to before (a release
// switch, the folder made again) is read whole before it is served, so
// that devices never see half of a release.
func (a *Appliance) reloadDir(prev *catalog.Catalog, unstable map[string]bool, rehash bool) (*catalog.Catalog, error) {
	fsys, replaced, was, err := a.dir.current()
	if err != nil {
		return nil, err
	}
	settle := a.cfg.Settle
	if settle == 0 {
		settle = time.Second
	}
	l := load{prev: prev, unstable: unstable, gzip: a.cfg.gzip(), keys: a.cfg.VerifyKeys, rehash: rehash, settle: settle, budget: hashRound}
	if replaced {
		l.budget = 0 // every file, before the new folder is published
	}
	if a.store != nil {
		l.cache = a.store
	}
	src := a.cfg.Firmware
	src.FS = fsys
	cat, err := loadCatalog(src, a.log, l)
	if err == nil && replaced {
		a.log.Info("catalog: the folder was replaced; serving the new one, read whole", "path", src.Dir,
			"was", was, "was_files", len(prev.Files()), "now", a.dir.Resolved(), "files", len(cat.Files()))
	}
	return cat, err
}

// verify checks, in the background, that the embedded firmware is what the
// build-time manifest says. If not (firmware/ changed without `make
// build`), it reloads the catalog the slow way and serves that instead.
func (a *Appliance) verify() {
	start := time.Now()
	src := a.cfg.Firmware
	stale := a.cat.Verify(src.FS, src.Manifest)
	if len(stale) == 0 {
		a.log.Debug("catalog: embedded firmware matches the build manifest", "files", len(a.cat.Files()), "took", time.Since(start).Round(time.Millisecond))
		return
	}
	a.log.Error("catalog: embedded firmware differs from the build manifest; re-reading it (build with make build to avoid this)", "files", fmt.Sprint(stale))
	src.Manifest = nil
	cat, err := loadCatalog(src, a.log, load{gzip: a.cfg.gzip(), keys: a.cfg.VerifyKeys})
	if err != nil {
		a.log.Error("catalog: reload failed; still serving the manifest's view", "err", err)
		return
	}
	logGzip(a.log, cat)
	a.publish(cat)
}

// logGzip reports what compression saves, per image.
func logGzip(log *slog.Logger, cat *catalog.Catalog) {
	for _, e := range cat.Files() {
		if e.Gzip != nil {
			log.Info("catalog: gzip for ESP8266 2.7+", "path", e.Path, "size", e.Size, "gzip", e.Gzip.Size, "saved", fmt.Sprintf("%.1f%%", 100*float64(e.Size-e.Gzip.Size)/float64(e.Size)))
		}
	}
}

// Run is New followed by Serve.
func Run(ctx context.Context, cfg Config) error {
	a, err := New(cfg)
	if err != nil {
		return err
	}
	return a.Serve(ctx)
}

// emptyCatalog says, in one line, how to give devices something to take.
func emptyCatalog(src Source) string {
	if src.Dir != "" {
		return "the catalog has no firmware yet: copy .bin files into " + src.Dir + "; they are served as soon as they stop changing"
	}
	return "this otabox carries no firmware: start it with --catalog DIR (a folder of .bin files), or build it with make build FIRMWARE=DIR"
}

// LevelCritical is Python's CRITICAL, above slog's ERROR.
const LevelCritical = slog.LevelError + 4

// ParseLevel reads a log level by Python's logging names, in any case, as
// the reference server's --log flag takes them.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case "DEBUG":
		return slog.LevelDebug, nil
	case "INFO":
		return slog.LevelInfo, nil
	case "WARNING", "WARN":
		return slog.LevelWarn, nil
	case "ERROR":
		return slog.LevelError, nil
	case "CRITICAL", "FATAL":
		return LevelCritical, nil
	}
	return 0, fmt.Errorf("unknown log level %q: use debug, info, warning, error or critical", s)
}

// NewLogger returns the text logger otabox writes to w.
func NewLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.LevelKey && a.Value.Any() == LevelCritical {
				a.Value = slog.StringValue("CRITICAL")
			}
			return a
		},
	}))
}
