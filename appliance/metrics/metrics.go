// Package metrics exports what otabox does in Prometheus form at /metrics:
// requests by endpoint and decision, bytes served, downloads in flight,
// devices seen and update outcomes. It observes; it decides nothing.
package metrics

import (
	"net/http"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"otabox/appliance/httpapi"
	"otabox/appliance/replica"
	"otabox/appliance/store"
)

// Metrics is one registry of otabox's collectors (no global registry).
type Metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	outcomes *prometheus.CounterVec

	// counted keeps the requests counter of each label set seen:
	// WithLabelValues hashes its three labels and formats the status on
	// every call, a tenth of the handler's time for a listing. The label
	// sets are few (endpoints × decisions × status codes).
	mu      sync.RWMutex
	counted map[requestLabels]prometheus.Counter
}

type requestLabels struct {
	endpoint, decision string
	status             int
}

// Sources are the live state the gauges read at scrape time.
type Sources struct {
	InFlight func() int               // downloads being sent
	States   func() map[string]int    // devices by update state (confirmed, failed, sent, ...)
	Health   func() store.Health      // the fleet record's
	HeldBack func() int               // devices with an image held back now
	Paused   func() map[string]string // rollouts that paused themselves, image → why
	Replica  func() *replica.Status   // the record's replica; nil without --replicate
}

// New registers the collectors.
func New(src Sources) *Metrics {
	inFlight, states, health := src.InFlight, src.States, src.Health
	m := &Metrics{
		reg:     prometheus.NewRegistry(),
		counted: map[requestLabels]prometheus.Counter{},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "otabox_requests_total", Help: "Device requests answered, by endpoint, decision and status.",
		}, []string{"endpoint", "decision", "status"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "otabox_bytes_served_total", Help: "Firmware body bytes written, by endpoint.",
		}, []string{"endpoint"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "otabox_downloads_total", Help: "Firmware downloads, by whether the whole image went out.",
		}, []string{"outcome"}),
	}
	m.reg.MustRegister(m.requests, m.bytes, m.outcomes,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "otabox_downloads_in_flight", Help: "Firmware bodies being sent now."},
			func() float64 { return float64(inFlight()) }),
		stateCollector{states},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "otabox_devices_held_back", Help: "Devices an image is held back from after failed updates (exponential back-off)."},
			func() float64 { return float64(src.HeldBack()) }),
		pausedCollector{src.Paused},
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "otabox_store_dropped_total", Help: "Records the store could not write (disk full, read-only, I/O error); devices were served all the same."},
			func() float64 { return float64(health().Dropped) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "otabox_store_truncated_total", Help: "Device-supplied values cut to the store's limits, and devices not added past its bound."},
			func() float64 { return float64(health().Truncated) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "otabox_store_written_total", Help: "Records the store committed."},
			func() float64 { return float64(health().Written) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "otabox_store_commits_total", Help: "Transactions the store committed (one fsync each; records that arrive together share one)."},
			func() float64 { return float64(health().Commits) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "otabox_store_healthy", Help: "1 while the store writes records, 0 while it drops them or after part of the record was found lost."},
			func() float64 {
				if h := health(); h.Open && h.Fault == "" && h.Lost == "" {
					return 1
				}
				return 0
			}),
		replicaCollector{src.Replica},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// stateCollector reports devices seen, in all and by update state.
type stateCollector struct{ states func() map[string]int }

var (
	seenDesc  = prometheus.NewDesc("otabox_devices_seen", "Devices (by MAC) in the fleet record.", nil, nil)
	stateDesc = prometheus.NewDesc("otabox_devices_by_update_state", "Devices by the state of their last update (none, sent, cut-off, confirmed, failed).", []string{"state"}, nil)
)

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- seenDesc; ch <- stateDesc }

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	total := 0
	for state, n := range c.states() {
		total += n
		if state == "" {
			state = "none"
		}
		ch <- prometheus.MustNewConstMetric(stateDesc, prometheus.GaugeValue, float64(n), state)
	}
	ch <- prometheus.MustNewConstMetric(seenDesc, prometheus.GaugeValue, float64(total))
}

// pausedCollector reports each rollout with max-failures: 1 while paused.
type pausedCollector struct{ paused func() map[string]string }

var pausedDesc = prometheus.NewDesc("otabox_rollout_paused", "1 for each rollout that paused itself after too many failed updates.", []string{"image"}, nil)

func (c pausedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- pausedDesc }

func (c pausedCollector) Collect(ch chan<- prometheus.Metric) {
	for img := range c.paused() {
		ch <- prometheus.MustNewConstMetric(pausedDesc, prometheus.GaugeValue, 1, img)
	}
}

// Observe counts one answered request.
func (m *Metrics) Observe(ev *httpapi.Exchange) {
	m.requestCounter(requestLabels{ev.Endpoint, ev.Decision, ev.Status}).Inc()
	if ev.Decision == "serve" {
		m.bytes.WithLabelValues(ev.Endpoint).Add(float64(ev.Bytes))
		outcome := "completed"
		switch {
		case ev.Withheld:
			outcome = "withheld" // its decision was not durable: the last bytes never went out
		case !ev.Completed:
			outcome = "cut-off"
		}
		m.outcomes.WithLabelValues(outcome).Inc()
	}
}

// requestCounter is the requests counter for l, made at its first use.
func (m *Metrics) requestCounter(l requestLabels) prometheus.Counter {
	m.mu.RLock()
	c, ok := m.counted[l]
	m.mu.RUnlock()
	if ok {
		return c
	}
	c = m.requests.WithLabelValues(l.endpoint, l.decision, strconv.Itoa(l.status))
	m.mu.Lock()
	m.counted[l] = c
	m.mu.Unlock()
	return c
}

// Handler serves the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// replicaCollector reports the fleet record's replica (--replicate), and
// nothing without one.
type replicaCollector struct{ status func() *replica.Status }

var (
	replicaHealthy = prometheus.NewDesc("otabox_replica_healthy", "1 while the fleet record's replica streams and is less than 10 s behind; 0 while it is behind, cannot be reached or is held back.", nil, nil)
	replicaBehind  = prometheus.NewDesc("otabox_replica_behind_seconds", "How long the replica has lacked a transaction the record holds (0 when it holds them all).", nil, nil)
	replicaSync    = prometheus.NewDesc("otabox_replica_last_sync_timestamp_seconds", "When a transaction last reached the replica (Unix time; 0 before the first).", nil, nil)
	replicaErrors  = prometheus.NewDesc("otabox_replica_errors_total", "Errors replicating the record (each retried).", nil, nil)
)

func (c replicaCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- replicaHealthy
	ch <- replicaBehind
	ch <- replicaSync
	ch <- replicaErrors
}

func (c replicaCollector) Collect(ch chan<- prometheus.Metric) {
	if c.status == nil {
		return
	}
	st := c.status()
	if st == nil {
		return
	}
	healthy, last := 0.0, 0.0
	if st.Degraded() == "" {
		healthy = 1
	}
	if !st.LastSync.IsZero() {
		last = float64(st.LastSync.UnixNano()) / 1e9
	}
	ch <- prometheus.MustNewConstMetric(replicaHealthy, prometheus.GaugeValue, healthy)
	ch <- prometheus.MustNewConstMetric(replicaBehind, prometheus.GaugeValue, st.Behind.Seconds())
	ch <- prometheus.MustNewConstMetric(replicaSync, prometheus.GaugeValue, last)
	ch <- prometheus.MustNewConstMetric(replicaErrors, prometheus.CounterValue, float64(st.Errors))
}
