package httpapi

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"otabox/appliance/catalog"
	"otabox/appliance/device"
)

// Exchange is one device request, as observers (the store, metrics) see
// it: at its decision, and once its response is done. Observers do not
// decide.
type Exchange struct {
	Time      time.Time
	Client    string // IP
	Method    string
	Endpoint  string // "catalog", "firmware", "update", "other"
	Target    string
	Device    *device.Facts
	Running   []*catalog.Entry // catalog images the device reported running
	Status    int
	Decision  string // "serve", "no-update", "refuse", "error"
	Reason    string
	Image     *catalog.Entry // served or considered
	Batch     string         // the factory batch the decision was made for
	Bytes     int64          // body bytes written
	Size      int64          // body bytes that should have been written
	Completed bool           // a firmware body went out whole
	Took      time.Duration

	// Committed says Decided saw this exchange before its first byte.
	Committed bool
	// Withheld says a download's last bytes were never sent because its
	// decision could not be made durable (Options.Decided).
	Withheld bool
	// RecordID is the recorder's id for the decision, set by Decided so
	// that the outcome can be tied to it.
	RecordID int64
}

// Download is one firmware body being sent, for the status page.
type Download struct {
	ID      uint64       `json:"id"`
	Client  string       `json:"client"`
	MAC     string       `json:"mac,omitempty"`
	Image   string       `json:"image"`
	Size    int64        `json:"size"`
	Started time.Time    `json:"started"`
	sent    atomic.Int64 // written to the socket
	dv      delivery     // set once, before the first write
}

// Sent is how many bytes the device has so far: acknowledged where the
// kernel tells, else written.
func (d *Download) Sent() int64 {
	n := d.sent.Load()
	if q, ok := d.dv.unacked(); ok {
		n -= int64(q)
	}
	return max(n, 0)
}

// Downloads tracks the firmware bodies in flight.
type Downloads struct {
	mu   sync.Mutex
	next uint64
	m    map[uint64]*Download
}

// NewDownloads returns an empty tracker.
func NewDownloads() *Downloads { return &Downloads{m: map[uint64]*Download{}} }

// start registers a download unless max (>0) are already running; it
// then returns nil and how many are.
func (ds *Downloads) start(client, mac, image string, size int64, max int, dv delivery) (*Download, int) {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if max > 0 && len(ds.m) >= max {
		return nil, len(ds.m)
	}
	ds.next++
	d := &Download{ID: ds.next, Client: client, MAC: mac, Image: image, Size: size, Started: time.Now(), dv: dv}
	ds.m[d.ID] = d
	return d, len(ds.m)
}

func (ds *Downloads) done(d *Download) {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	delete(ds.m, d.ID)
}

// Snapshot is one in-flight download with its progress.
type Snapshot struct {
	*Download
	SentBytes int64 `json:"sent"`
}

// List returns the downloads in flight, oldest first.
func (ds *Downloads) List() []Snapshot {
	ds.mu.Lock()
	out := make([]Snapshot, 0, len(ds.m))
	for _, d := range ds.m {
		out = append(out, Snapshot{Download: d, SentBytes: d.Sent()})
	}
	ds.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Len is the number of downloads in flight.
func (ds *Downloads) Len() int {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	return len(ds.m)
}
