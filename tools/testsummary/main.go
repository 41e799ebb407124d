// Command testsummary reads `go test -json` and prints what a person needs
// from a test run: each package's result, the output of every failed test,
// every skipped test with its reason, and one closing line:
//
//	412 passed, 0 failed, 3 skipped
//
// It exits 1 when any test or package failed, so `make test` fails too.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

type summary struct {
	passed, failed, skipped int
	pkgFailed               bool
	out                     map[string][]string // test → its output so far
	skips                   []string
}

func main() {
	s := &summary{out: map[string][]string{}}
	if err := s.read(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(1)
	}
	s.report(os.Stdout)
	if s.failed > 0 || s.pkgFailed {
		os.Exit(1)
	}
}

func (s *summary) read(r io.Reader, w io.Writer) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			fmt.Fprintln(w, sc.Text()) // not JSON: a build error, say; pass it on
			continue
		}
		key := e.Package + " " + e.Test
		switch e.Action {
		case "output":
			if e.Test == "" {
				// Package lines: "ok", "FAIL", build errors; not the RUN/PASS chatter.
				if t := strings.TrimSpace(e.Output); !strings.HasPrefix(t, "=== ") && !strings.HasPrefix(t, "--- PASS") && t != "PASS" {
					fmt.Fprint(w, e.Output)
				}
				continue
			}
			if len(s.out[key]) < 2000 {
				s.out[key] = append(s.out[key], e.Output)
			}
		case "pass":
			if e.Test != "" {
				s.passed++
			}
			delete(s.out, key)
		case "skip":
			if e.Test != "" {
				s.skipped++
				s.skips = append(s.skips, fmt.Sprintf("%s %s: %s", e.Package, e.Test, reason(s.out[key])))
			}
			delete(s.out, key)
		case "fail":
			if e.Test == "" {
				s.pkgFailed = true
				continue
			}
			s.failed++
			for _, l := range s.out[key] {
				fmt.Fprint(w, l)
			}
			delete(s.out, key)
		}
	}
	return sc.Err()
}

// reason is the t.Skip message: the last "file_test.go:N: ..." line.
func reason(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		t := strings.TrimSpace(lines[i])
		if strings.HasPrefix(t, "---") || strings.HasPrefix(t, "===") || t == "" {
			continue
		}
		if _, msg, ok := strings.Cut(t, ".go:"); ok {
			if _, m, ok := strings.Cut(msg, ": "); ok {
				return m
			}
		}
		return t
	}
	return "(no reason given)"
}

func (s *summary) report(w io.Writer) {
	if len(s.skips) > 0 {
		sort.Strings(s.skips)
		fmt.Fprintf(w, "\nskipped (%d):\n", len(s.skips))
		for _, l := range s.skips {
			fmt.Fprintln(w, "  "+l)
		}
	}
	fmt.Fprintf(w, "\n%d passed, %d failed, %d skipped\n", s.passed, s.failed, s.skipped)
}
