package store

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Formats the CLI prints in.
const (
	FormatTable = "table"
	FormatJSON  = "json"
	FormatCSV   = "csv"
)

// UpdateState is a device's update state as people read it: the state,
// the image it concerns and, when held back, until when.
func (d *Device) UpdateState() string {
	if d.Downloading != "" {
		return "downloading " + d.Downloading
	}
	if d.State == "" {
		return "-"
	}
	s := d.State
	if d.Sent != "" {
		s += " (" + d.Sent + ")"
	}
	if d.HeldUntil.After(time.Now()) {
		s += fmt.Sprintf(", held back until %s after %d failed attempts", d.HeldUntil.Local().Format("2006-01-02 15:04"), d.Failures)
	}
	return s
}

// WriteDevices prints devices as a table, JSON or CSV.
func WriteDevices(w io.Writer, devs []Device, format string) error {
	switch format {
	case FormatJSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(devs)
	case FormatCSV:
		cw := csv.NewWriter(w)
		cw.Write([]string{"mac", "ip", "family", "chip", "first_seen", "last_seen", "running", "digest", "state", "sent", "failures", "held_until", "decision", "reason", "requests", "downloads"})
		for _, d := range devs {
			held := ""
			if !d.HeldUntil.IsZero() {
				held = d.HeldUntil.Format(time.RFC3339)
			}
			cw.Write([]string{d.MAC, d.IP, d.Family, d.Chip, d.FirstSeen.Format(time.RFC3339), d.LastSeen.Format(time.RFC3339), d.Running, d.Digest,
				d.State, d.Sent, strconv.FormatInt(d.Failures, 10), held, d.Decision, d.Reason, strconv.FormatInt(d.Requests, 10), strconv.FormatInt(d.Downloads, 10)})
		}
		cw.Flush()
		return cw.Error()
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MAC\tIP\tFAMILY\tLAST SEEN\tRUNNING\tUPDATE\tLAST DECISION")
	for _, d := range devs {
		running := d.Running
		if running == "" {
			running = "unknown"
		}
		decision := d.Decision
		if d.Reason != "" {
			decision += ": " + oneLine(d.Reason)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.MAC, d.IP, d.Family, d.LastSeen.Local().Format("2006-01-02 15:04:05"), running, d.UpdateState(), decision)
	}
	return tw.Flush()
}

// WriteEvents prints events as a table, JSON or CSV.
func WriteEvents(w io.Writer, evs []Event, format string) error {
	switch format {
	case FormatJSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(evs)
	case FormatCSV:
		cw := csv.NewWriter(w)
		cw.Write([]string{"id", "time", "client", "mac", "method", "endpoint", "target", "status", "decision", "reason", "image", "running", "bytes", "size", "completed", "repeats"})
		for _, e := range evs {
			cw.Write([]string{strconv.FormatInt(e.ID, 10), e.Time.Format(time.RFC3339Nano), e.Client, e.MAC, e.Method, e.Endpoint, e.Target,
				strconv.Itoa(e.Status), e.Decision, e.Reason, e.Image, e.Running, strconv.FormatInt(e.Bytes, 10), strconv.FormatInt(e.Size, 10), strconv.FormatBool(e.Completed),
				strconv.FormatInt(e.Repeats, 10)})
		}
		cw.Flush()
		return cw.Error()
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tCLIENT\tTARGET\tSTATUS\tDECISION\tBYTES\tREASON")
	for _, e := range evs {
		bytes := "-"
		if e.Decision == "serve" {
			bytes = fmt.Sprintf("%d/%d", e.Bytes, e.Size)
		}
		decision := e.Decision
		if e.Repeats > 1 {
			decision += fmt.Sprintf(" ×%d", e.Repeats) // identical listings within 100 ms
		}
		fmt.Fprintf(tw, "%s\t%s\t%s %s\t%d\t%s\t%s\t%s\n", e.Time.Local().Format("2006-01-02 15:04:05"), e.Client, e.Method, oneLine(e.Target), e.Status, decision, bytes, oneLine(e.Reason))
	}
	return tw.Flush()
}

// oneLine keeps a stored value from breaking a table row.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
