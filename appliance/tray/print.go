package tray

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// WriteRows prints the tray's rows: a table a supervisor reads, or JSON.
// The last line counts the boards that passed.
func WriteRows(w io.Writer, rows []Board, asJSON bool) error {
	if asJSON {
		e := json.NewEncoder(w)
		e.SetIndent("", "  ")
		return e.Encode(rows)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tCHIP\tMAC\tFLASH\tBYTES\tVERIFIED\tTIME\tRESULT")
	passed := 0
	for _, r := range rows {
		result := "passed"
		if !r.Passed {
			result = "FAILED: " + r.Reason
		} else {
			passed++
			if r.Reason != "" {
				result += " (" + r.Reason + ")"
			}
		}
		verified := r.Verified
		if verified == "" {
			verified = "-"
		}
		flash := "-"
		if r.FlashSize > 0 {
			flash = fmt.Sprintf("%d MB", r.FlashSize>>20)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.Slot, dash(r.Chip), dash(r.MAC), flash, r.Bytes, verified, r.Took.Round(100*time.Millisecond), result)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	noun := "boards"
	if len(rows) == 1 {
		noun = "board"
	}
	_, err := fmt.Fprintf(w, "%d of %d %s passed\n", passed, len(rows), noun)
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
