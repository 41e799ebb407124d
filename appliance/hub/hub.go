// Package hub reads many boxes as one fleet. Each box is the only writer
// of its own record and streams it to a replica (otabox serve
// --replicate); the hub restores every box's replica, read-only, into a
// folder of its own and refreshes it on an interval, then answers one
// status page, /api/devices, /api/events and batch reports across the
// boxes, every row saying which box. The hub writes nothing to a box or
// a replica: a box that dies loses only what had not reached its replica,
// and the hub shows the rest as of its last refresh.
package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"time"

	"otabox/appliance/replica"
	"otabox/appliance/store"
)

// Box is one box's replica, by the name the hub shows it under.
type Box struct {
	Name    string
	Replica replica.Options
}

// Config is the hub's boxes and where it keeps their copies.
type Config struct {
	Dir     string // one folder per box under it
	Boxes   []Box
	Refresh time.Duration // how often each replica is read again (default 1 min)
	Logger  *slog.Logger
}

var boxName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// ParseBox reads a --box flag: NAME=URL.
func ParseBox(s string) (Box, error) {
	name, url, ok := cutEq(s)
	if !ok || url == "" {
		return Box{}, fmt.Errorf("--box %q: give NAME=URL (site-1=s3://bucket/otabox/site-1)", s)
	}
	if !boxName.MatchString(name) {
		return Box{}, fmt.Errorf("--box %q: a box name is a-z, 0-9 and '-', at most 63", s)
	}
	return Box{Name: name, Replica: replica.Options{URL: url}}, nil
}

func cutEq(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '=' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// Hub holds each box's latest copy.
type Hub struct {
	cfg   Config
	log   *slog.Logger
	mu    sync.RWMutex
	boxes []*box
}

// box is one box's copy: the reader of its latest restore, and how that
// went.
type box struct {
	Box
	st        *store.Store // nil until the first restore worked
	gen       string       // the folder st reads
	refreshed time.Time    // when st was restored
	updated   time.Time    // when the replica last received a transaction
	err       string       // the last refresh's failure, "" when it worked
	errAt     time.Time
}

// New checks the boxes; Run reads them.
func New(cfg Config) (*Hub, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = time.Minute
	}
	if len(cfg.Boxes) == 0 {
		return nil, errors.New("hub: name at least one box (--box NAME=URL)")
	}
	h := &Hub{cfg: cfg, log: cfg.Logger}
	seen := map[string]bool{}
	for _, b := range cfg.Boxes {
		if seen[b.Name] {
			return nil, fmt.Errorf("hub: box %q named twice", b.Name)
		}
		seen[b.Name] = true
		if err := replica.Check(b.Replica); err != nil {
			return nil, fmt.Errorf("hub: box %s: %w", b.Name, err)
		}
		h.boxes = append(h.boxes, &box{Box: b})
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("hub %s: %w", cfg.Dir, err)
	}
	return h, nil
}

// Run refreshes every box now and then every Refresh until ctx is done,
// when it closes the copies.
func (h *Hub) Run(ctx context.Context) {
	defer h.close()
	t := time.NewTicker(h.cfg.Refresh)
	defer t.Stop()
	for {
		h.RefreshAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// RefreshAll reads every box's replica again, four at a time.
func (h *Hub) RefreshAll(ctx context.Context) {
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for _, b := range h.boxes {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			h.refresh(ctx, b)
		}()
	}
	wg.Wait()
}

// refresh restores b's replica into a new folder and, once it opens,
// swaps it in for the old copy, which is then removed. A refresh that
// fails keeps the old copy and says why.
func (h *Hub) refresh(ctx context.Context, b *box) {
	start := time.Now()
	gen := filepath.Join(h.cfg.Dir, b.Name, strconv.FormatInt(start.UnixNano(), 36))
	fail := func(err error) {
		os.RemoveAll(gen)
		h.mu.Lock()
		b.err, b.errAt = err.Error(), time.Now()
		h.mu.Unlock()
		h.log.Warn("hub: a box's replica could not be read; its last copy is shown", "box", b.Name, "err", err)
	}
	if err := os.MkdirAll(gen, 0o750); err != nil {
		fail(err)
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	res, err := replica.Restore(rctx, b.Replica, filepath.Join(gen, store.FileName))
	cancel()
	if err != nil {
		fail(err)
		return
	}
	st, err := store.OpenReader(gen)
	if err != nil {
		fail(err)
		return
	}
	h.mu.Lock()
	old, oldGen := b.st, b.gen
	b.st, b.gen, b.refreshed, b.updated, b.err = st, gen, time.Now(), res.Updated, ""
	h.mu.Unlock()
	if old != nil {
		old.Close()
		os.RemoveAll(oldGen)
	}
	h.log.Debug("hub: box refreshed", "box", b.Name, "txid", res.TXID, "took", time.Since(start).Round(time.Millisecond))
}

func (h *Hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, b := range h.boxes {
		if b.st != nil {
			b.st.Close()
			b.st = nil
		}
	}
}

// BoxStatus is how fresh the hub's copy of one box is.
type BoxStatus struct {
	Name string `json:"box"`
	URL  string `json:"replica"`
	// Refreshed is when the copy was read; Updated when the box's replica
	// last received a transaction (how stale the box itself is).
	Refreshed time.Time `json:"refreshed,omitzero"`
	Updated   time.Time `json:"replica_updated,omitzero"`
	Devices   int64     `json:"devices"`
	Events    int64     `json:"events"`
	Err       string    `json:"error,omitempty"`
	ErrAt     time.Time `json:"error_at,omitzero"`
}

// Boxes says how each box's copy stands, in the order given.
func (h *Hub) Boxes(ctx context.Context) []BoxStatus {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]BoxStatus, 0, len(h.boxes))
	for _, b := range h.boxes {
		s := BoxStatus{Name: b.Name, URL: replica.Redacted(b.Replica.URL), Refreshed: b.refreshed, Updated: b.updated, Err: b.err, ErrAt: b.errAt}
		if b.st != nil {
			c, _ := b.st.Counts(ctx)
			s.Devices, s.Events = c.Devices, c.Events
		}
		out = append(out, s)
	}
	return out
}

// Device is a device as one box's record has it.
type Device struct {
	Box string `json:"box"`
	store.Device
}

// Devices lists the devices of every box that f selects, most recently
// seen first, at most f.Limit in all; the total is across boxes.
func (h *Hub) Devices(ctx context.Context, f store.DeviceFilter) ([]Device, int, error) {
	if err := f.Check(); err != nil {
		return nil, 0, err
	}
	limit := f.Limit
	f.Offset = 0
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := []Device{}
	total := 0
	for _, b := range h.boxes {
		if b.st == nil {
			continue
		}
		devs, n, err := b.st.Devices(ctx, f)
		if err != nil {
			return nil, 0, fmt.Errorf("box %s: %w", b.Name, err)
		}
		total += n
		for _, d := range devs {
			out = append(out, Device{Box: b.Name, Device: d})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].LastSeen.After(out[j].LastSeen) })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, total, nil
}

// Event is a request as one box's record has it.
type Event struct {
	Box string `json:"box"`
	store.Event
}

// Events lists the newest events of every box, newest first, at most
// f.Limit in all.
func (h *Hub) Events(ctx context.Context, f store.EventFilter) ([]Event, error) {
	f.Before = 0 // ids are each box's own: paging is by limit only
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := []Event{}
	for _, b := range h.boxes {
		if b.st == nil {
			continue
		}
		evs, err := b.st.Events(ctx, f)
		if err != nil {
			return nil, fmt.Errorf("box %s: %w", b.Name, err)
		}
		for _, e := range evs {
			out = append(out, Event{Box: b.Name, Event: e})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.After(out[j].Time) })
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, nil
}

// ErrNoBatch says no box ran the batch.
var ErrNoBatch = errors.New("no box ran this batch")

// Batch is one batch across the stations that ran it under the same
// name: its boards, each with its station, and the batch as one (opened
// by the first station, closed when the last closed it, expecting the
// sum of their trays). The stations must have given the same image;
// otherwise it is refused, naming them, rather than one report mixing
// two productions.
func (h *Hub) Batch(ctx context.Context, name string) (store.Batch, []store.BatchDevice, []string, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	var all store.Batch
	var devs []store.BatchDevice
	var stations []string
	open := false
	for _, b := range h.boxes {
		if b.st == nil {
			continue
		}
		bt, ok, err := b.st.Batch(ctx, name)
		if err != nil {
			return all, nil, nil, fmt.Errorf("box %s: %w", b.Name, err)
		}
		if !ok {
			continue
		}
		if len(stations) == 0 {
			all = *bt
			all.Expect = 0
		} else if bt.ImageSHA256 != all.ImageSHA256 {
			return all, nil, nil, fmt.Errorf("batch %s: station %s gave %s (%s) and %s gave %s (%s): not one production", name, stations[0], all.Image, short(all.ImageSHA256), b.Name, bt.Image, short(bt.ImageSHA256))
		}
		stations = append(stations, b.Name)
		all.Expect += bt.Expect
		if bt.Opened.Before(all.Opened) {
			all.Opened = bt.Opened
		}
		if bt.IsOpen() {
			open = true
		} else if bt.Closed.After(all.Closed) {
			all.Closed = bt.Closed
		}
		ds, err := b.st.BatchDevices(ctx, name)
		if err != nil {
			return all, nil, nil, fmt.Errorf("box %s: %w", b.Name, err)
		}
		for _, d := range ds {
			d.Station = b.Name
			devs = append(devs, d)
		}
	}
	if len(stations) == 0 {
		return all, nil, nil, fmt.Errorf("batch %q: %w", name, ErrNoBatch)
	}
	if open {
		all.Closed = time.Time{}
	}
	sort.SliceStable(devs, func(i, j int) bool {
		if devs[i].Station != devs[j].Station {
			return devs[i].Station < devs[j].Station
		}
		return devs[i].MAC < devs[j].MAC
	})
	return all, devs, stations, nil
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
