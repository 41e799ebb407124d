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

func compareField(x, y string) int {
	nx, ny := isNum(x), isNum(y)
	if nx && ny {
		x, y = strings.TrimLeft(x, "0"), strings.TrimLeft(y, "0")
		if len(x) != len(y) {
			return sign(len(x) - len(y))
		}
	}
	if nx != ny && x != "" && y != "" {
		if nx {
			return 1 // "1.2.3" > "1.2.beta"
		}
		return -1
	}
	return strings.Compare(x, y)
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
