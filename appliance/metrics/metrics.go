// Package metrics exports what otabox does in Prometheus form at /metrics:
// requests by endpoint and decision, bytes served, downloads in flight,
// devices seen and update outcomes. It observes; it decides nothing.
package metrics

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"otabox/appliance/httpapi"
)

// Metrics is one registry of otabox's collectors (no global registry).
type Metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	outcomes *prometheus.CounterVec
}

// New registers the collectors. inFlight and states are read at scrape
// time from the live state they describe; states counts devices by update
// state (confirmed, failed, sent, ...).
func New(inFlight func() int, states func() map[string]int) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
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
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// stateCollector reports devices seen, in all and by update state.
type stateCollector struct{ states func() map[string]int }

var (
	seenDesc  = prometheus.NewDesc("otabox_devices_seen", "Devices (by MAC) in the ledger.", nil, nil)
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

// Observe counts one answered request.
func (m *Metrics) Observe(ev *httpapi.Exchange) {
	m.requests.WithLabelValues(ev.Endpoint, ev.Decision, strconv.Itoa(ev.Status)).Inc()
	if ev.Decision == "serve" {
		m.bytes.WithLabelValues(ev.Endpoint).Add(float64(ev.Bytes))
		outcome := "completed"
		if !ev.Completed {
			outcome = "cut-off"
		}
		m.outcomes.WithLabelValues(outcome).Inc()
	}
}

// Handler serves the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
