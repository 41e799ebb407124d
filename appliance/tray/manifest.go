package tray

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// webToolsManifest is an ESP Web Tools manifest (esphome/esp-web-tools,
// its README and const.ts): per chip family, the parts to write at their
// offsets; a part's path is relative to the manifest.
type webToolsManifest struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Builds  []struct {
		ChipFamily string `json:"chipFamily"`
		Parts      []struct {
			Path   string `json:"path"`
			Offset uint32 `json:"offset"`
		} `json:"parts"`
	} `json:"builds"`
}

// ManifestPlan reads an ESP Web Tools manifest and its parts: each board
// is given the build of its own chip family (the names match what the
// ROMs say: ESP8266, ESP32, ESP32-S2, ESP32-S3, ESP32-C3, ...), so one
// command flashes a tray of mixed chips; a board whose chip has no build
// is refused before the first write. Every part is read before any board
// is touched.
func ManifestPlan(path string) (Plan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m webToolsManifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", path, err)
	}
	builds := map[string][]Part{}
	for _, bd := range m.Builds {
		if bd.ChipFamily == "" || len(bd.Parts) == 0 {
			return nil, fmt.Errorf("manifest %s: a build without chipFamily or parts", path)
		}
		if _, dup := builds[bd.ChipFamily]; dup {
			return nil, fmt.Errorf("manifest %s: two builds for %s", path, bd.ChipFamily)
		}
		var parts []Part
		for _, p := range bd.Parts {
			if strings.Contains(p.Path, "://") {
				return nil, fmt.Errorf("manifest %s: part %s is a URL; otabox flashes offline, from files beside the manifest", path, p.Path)
			}
			if !filepath.IsLocal(filepath.FromSlash(p.Path)) {
				return nil, fmt.Errorf("manifest %s: part %s is outside the manifest's folder", path, p.Path)
			}
			file := filepath.Join(filepath.Dir(path), filepath.FromSlash(p.Path))
			data, err := os.ReadFile(file)
			if err != nil {
				return nil, fmt.Errorf("manifest %s: %w", path, err)
			}
			parts = append(parts, NewPart(p.Offset, filepath.Base(file), data))
		}
		builds[bd.ChipFamily] = parts
	}
	if len(builds) == 0 {
		return nil, fmt.Errorf("manifest %s has no builds", path)
	}
	return func(chip string) ([]Part, error) {
		if parts, ok := builds[chip]; ok {
			return parts, nil
		}
		have := make([]string, 0, len(builds))
		for c := range builds {
			have = append(have, c)
		}
		sort.Strings(have)
		return nil, fmt.Errorf("the manifest has no build for %s (it has %s)", chip, strings.Join(have, ", "))
	}, nil
}
