// Package suggest finds the word someone probably meant: the "did you
// mean" of a misspelt command or a policy rule's image name.
package suggest

import (
	"path"
	"strings"
)

// Distance is the Levenshtein distance between a and b: the fewest
// single-byte insertions, deletions and substitutions from one to the
// other.
func Distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Closest is the file path nearest to name: the same name in another case,
// or the one fewest edits away (at most a third of the name).
func Closest(name string, images []string) string {
	best, bestD := "", len(name)/3+1
	for _, im := range images {
		if strings.EqualFold(im, name) {
			return im
		}
		if d := Distance(strings.ToLower(name), strings.ToLower(im)); d < bestD {
			best, bestD = im, d
		}
		if base := path.Base(im); strings.EqualFold(base, name) || strings.EqualFold(strings.TrimSuffix(base, ".bin"), name) || strings.EqualFold(strings.TrimSuffix(im, ".bin"), name) {
			return im
		}
	}
	if best != "" {
		return best
	}
	// "lab/sensor.bin" for "lab/sensor-esp8266-1m.bin": the same folder,
	// and one name starts with the other.
	stem := strings.ToLower(strings.TrimSuffix(name, ".bin"))
	for _, im := range images {
		if path.Dir(im) == path.Dir(name) && strings.HasPrefix(strings.ToLower(im), stem) {
			return im
		}
	}
	return ""
}
