package decide

import "strings"

// CompareVersions orders version strings the way people write them for
// firmware: "v1.10.0" > "1.9.2" > "1.9" > "1.9-rc1". Numeric runs compare as
// numbers, other runs as text; a pre-release suffix ("-rc1", "-beta")
// sorts before the release. It returns -1, 0 or +1.
func CompareVersions(a, b string) int {
	a, b = strings.TrimPrefix(strings.TrimPrefix(a, "v"), "V"), strings.TrimPrefix(strings.TrimPrefix(b, "v"), "V")
	ra, pa, _ := strings.Cut(a, "-")
	rb, pb, _ := strings.Cut(b, "-")
	if c := compareRuns(ra, rb); c != 0 {
		return c
	}
	switch {
	case pa == pb:
		return 0
	case pa == "":
		return 1 // a release beats its pre-releases
	case pb == "":
		return -1
	}
	return compareRuns(pa, pb)
}

// compareRuns compares dotted strings field by field, numbers numerically.
func compareRuns(a, b string) int {
	fa, fb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(fa) || i < len(fb); i++ {
		var x, y string
		if i < len(fa) {
			x = fa[i]
		}
		if i < len(fb) {
			y = fb[i]
		}
		if c := compareField(x, y); c != 0 {
			return c
		}
	}
	return 0
}

// compareField compares one dotted field as a natural sort does: runs of
// digits by value, other runs as text, a number above text ("3" > "beta"),
// and anything above nothing ("rc" < "rc1").
func compareField(x, y string) int {
	for x != "" || y != "" {
		if x == "" || y == "" {
			return sign(len(x) - len(y))
		}
		tx, ty := run(x), run(y)
		x, y = x[len(tx):], y[len(ty):]
		nx, ny := isNum(tx), isNum(ty)
		switch {
		case nx && ny:
			tx, ty = strings.TrimLeft(tx, "0"), strings.TrimLeft(ty, "0")
			if len(tx) != len(ty) {
				return sign(len(tx) - len(ty))
			}
		case nx != ny:
			if nx {
				return 1
			}
			return -1
		}
		if c := strings.Compare(tx, ty); c != 0 {
			return c
		}
	}
	return 0
}

// run returns the leading run of digits, or of non-digits, of s.
func run(s string) string {
	digit := s[0] >= '0' && s[0] <= '9'
	i := 1
	for i < len(s) && (s[i] >= '0' && s[i] <= '9') == digit {
		i++
	}
	return s[:i]
}

func isNum(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}
