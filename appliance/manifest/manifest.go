// Package manifest renders the catalog as the manifests other update
// clients read: ESPHome's update platform http_request reads an ESP Web
// Tools manifest with an "ota" block per build (name, version, and per
// chip family the image's path and MD5). Pure functions over the catalog.
package manifest

import (
	"encoding/json"
	"fmt"
	"sort"

	"otabox/appliance/catalog"
	"otabox/appliance/decide"
	"otabox/appliance/espimage"
)

// ESPHome is the manifest esphome/components/http_request/update reads:
// name, version and builds are required; a build needs chipFamily, and
// the one for the device's variant an ota block with path and md5.
type ESPHome struct {
	Name    string  `json:"name"`
	Version string  `json:"version"`
	Builds  []Build `json:"builds"`
}

// Build is one chip family's image.
type Build struct {
	ChipFamily string `json:"chipFamily"`
	OTA        OTA    `json:"ota"`
}

// OTA is ESPHome's extension of an ESP Web Tools build. A path starting
// with "/" is taken by the device from the manifest's own host.
type OTA struct {
	Path    string `json:"path"`
	MD5     string `json:"md5"`
	Summary string `json:"summary,omitempty"`
}

// ChipFamily is an image's chip as ESP Web Tools and ESPHome's
// ESPHOME_VARIANT name it ("ESP8266", "ESP32", "ESP32-S3", ...).
func ChipFamily(img *espimage.Image) string {
	if img.Family == espimage.ESP8266 {
		return "ESP8266"
	}
	return img.Chip.String()
}

// ForImage is the manifest of one catalog image; ok is false when it has
// no version (ESPHome compares the manifest's version with its own).
func ForImage(e *catalog.Entry) (ESPHome, error) {
	if e.Type != catalog.Bin || e.Image == nil {
		return ESPHome{}, fmt.Errorf("%s is not a firmware image", e.Path)
	}
	if e.Image.Version == "" {
		return ESPHome{}, fmt.Errorf("%s has no version: ESPHome would offer it again and again", e.Path)
	}
	name := e.Image.Project
	if name == "" {
		name = e.Name
	}
	return ESPHome{Name: name, Version: e.Image.Version, Builds: []Build{build(e)}}, nil
}

func build(e *catalog.Entry) Build {
	return Build{ChipFamily: ChipFamily(e.Image), OTA: OTA{Path: "/" + e.Path, MD5: e.MD5,
		Summary: fmt.Sprintf("%s %s, built %s %s", e.Image.Project, e.Image.Version, e.Date, e.Time)}}
}

// ForProject is a project's release: its newest version, with one build
// per chip family the catalog has at that version. Only one version is
// in a manifest, so that no device is offered a build older than the
// version the manifest names (it would flash it on every check).
func ForProject(project string, files []*catalog.Entry) (ESPHome, error) {
	var newest string
	for _, e := range files {
		if e.Type == catalog.Bin && e.Image != nil && e.Image.Project == project && e.Image.Version != "" &&
			(newest == "" || decide.CompareVersions(e.Image.Version, newest) > 0) {
			newest = e.Image.Version
		}
	}
	if newest == "" {
		return ESPHome{}, fmt.Errorf("no image of project %q with a version in the catalog", project)
	}
	m := ESPHome{Name: project, Version: newest}
	seen := map[string]bool{}
	for _, e := range files {
		if e.Type != catalog.Bin || e.Image == nil || e.Image.Project != project || e.Image.Version != newest {
			continue
		}
		if b := build(e); !seen[b.ChipFamily] {
			seen[b.ChipFamily] = true
			m.Builds = append(m.Builds, b)
		}
	}
	sort.Slice(m.Builds, func(i, j int) bool { return m.Builds[i].ChipFamily < m.Builds[j].ChipFamily })
	return m, nil
}

// JSON is the manifest as served.
func (m ESPHome) JSON() []byte {
	b, _ := json.MarshalIndent(m, "", "  ")
	return append(b, '\n')
}
