package manifest

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"otabox/appliance/catalog"
	"otabox/appliance/decide"
	"otabox/appliance/espimage"
	"otabox/appliance/fsimage"
)

// FOTA is the manifest esp32FOTA reads (chrisjoyce911/esp32FOTA,
// esp32FOTA::checkJSONManifest): type must equal the name the sketch gave
// esp32FOTA, version is compared as semver with its own and flashed when
// greater, and the image is fetched from http://host:port/bin. A
// filesystem URL (littlefs, spiffs) is read only in this host/port/bin
// form, never with "url", which is why otabox writes this form.
type FOTA struct {
	Type     string `json:"type"`
	Version  string `json:"version"`
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Bin      string `json:"bin"`
	LittleFS string `json:"littlefs,omitempty"`
	SPIFFS   string `json:"spiffs,omitempty"`
}

// ForFOTA is project's esp32FOTA manifest: its newest ESP32-family image
// with a version, on chip when chip is not "" (esp32FOTA's manifest has
// no chip field, so a project with builds for several chips at its newest
// version needs one manifest URL per chip), and the project's newest
// filesystem image (decide.FilesystemOf). host and port are where the
// device reached this box.
func ForFOTA(project, chip string, files []*catalog.Entry, host string, port int) (FOTA, error) {
	var want espimage.Chip
	if chip != "" {
		c, ok := espimage.ParseChip(chip)
		if !ok {
			return FOTA{}, fmt.Errorf("chip %q is no ESP32 chip otabox knows (esp32, esp32s2, esp32s3, esp32c3, ...)", chip)
		}
		want = c
	}
	var newest string
	for _, e := range files {
		if fotaImage(e, project, chip != "", want) && (newest == "" || decide.CompareVersions(e.Image.Version, newest) > 0) {
			newest = e.Image.Version
		}
	}
	if newest == "" {
		return FOTA{}, fmt.Errorf("no ESP32 image of project %q with a version in the catalog", project)
	}
	var at []*catalog.Entry
	chips := map[string]bool{}
	for _, e := range files {
		if fotaImage(e, project, chip != "", want) && e.Image.Version == newest {
			at = append(at, e)
			chips[e.Image.Chip.String()] = true
		}
	}
	if len(chips) > 1 {
		names := make([]string, 0, len(chips))
		for c := range chips {
			names = append(names, c)
		}
		sort.Strings(names)
		return FOTA{}, fmt.Errorf("project %q has builds for %s at %s and esp32FOTA's manifest has no chip field: ask this URL with ?chip=%s (one manifest URL per chip)",
			project, strings.Join(names, ", "), newest, strings.ToLower(strings.ReplaceAll(names[0], "-", "")))
	}
	sort.Slice(at, func(i, j int) bool { return at[i].Path < at[j].Path })
	m := FOTA{Type: project, Version: newest, Host: host, Port: port, Bin: "/" + at[0].Path}
	if fs := decide.NewestFilesystem(project, files); fs != nil {
		if fs.FS.Kind == fsimage.LittleFS {
			m.LittleFS = "/" + fs.Path
		} else {
			m.SPIFFS = "/" + fs.Path
		}
	}
	return m, nil
}

func fotaImage(e *catalog.Entry, project string, onChip bool, chip espimage.Chip) bool {
	return e.Type == catalog.Bin && e.Image != nil && e.Image.Family == espimage.ESP32 && e.Image.Project == project &&
		e.Image.Version != "" && (!onChip || e.Image.Chip == chip)
}

// JSON is the manifest as served.
func (m FOTA) JSON() []byte {
	b, _ := json.MarshalIndent(m, "", "  ")
	return append(b, '\n')
}
