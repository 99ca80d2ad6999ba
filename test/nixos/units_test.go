package nixos

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	sdunit "github.com/coreos/go-systemd/v22/unit"
)

// unit is a parsed systemd unit file: section -> key -> values, in order.
type unit map[string]map[string][]string

// parseUnit reads a unit file from units/ (go-systemd's parser) and applies
// its lines the way systemd does for the keys the tests compare: `Key=`
// with an empty value resets the list.
func parseUnit(name string) (unit, error) {
	b, err := os.ReadFile(filepath.Join(repo, "units", name))
	if err != nil {
		return nil, fmt.Errorf("unit %s: %w", name, err)
	}
	u := unit{}
	return u, scanUnit(name, string(b), u.set)
}

// scanUnit calls set for each `Key=value` of unit text (a unit file or a
// drop-in), in order, with its section, as go-systemd's parser reads it.
func scanUnit(name, text string, set func(section, key, value string)) error {
	opts, err := sdunit.DeserializeOptions(strings.NewReader(text))
	if err != nil {
		return fmt.Errorf("unit %s: %w", name, err)
	}
	for _, o := range opts {
		set(o.Section, o.Name, o.Value)
	}
	return nil
}

func (u unit) set(section, key, value string) {
	if u[section] == nil {
		u[section] = map[string][]string{}
	}
	if value == "" {
		u[section][key] = nil
		return
	}
	u[section][key] = append(u[section][key], value)
}

// withDropin returns a copy of u with a drop-in's values applied in order.
func (u unit) withDropin(section string, dropin map[string][]string) unit {
	out := unit{}
	for s, kv := range u {
		out[s] = map[string][]string{}
		for k, v := range kv {
			out[s][k] = append([]string(nil), v...)
		}
	}
	for k, vs := range dropin {
		if out[section] == nil {
			out[section] = map[string][]string{}
		}
		if _, ok := out[section][k]; !ok {
			out[section][k] = nil
		}
		for _, v := range vs {
			out.set(section, k, v)
		}
	}
	return out
}

// instance substitutes the instance name for %i in every value.
func (u unit) instance(name string) unit {
	out := unit{}
	for s, kv := range u {
		out[s] = map[string][]string{}
		for k, vs := range kv {
			out[s][k] = []string{} // an emptied key (CapabilityBoundingSet=) stays
			for _, v := range vs {
				out[s][k] = append(out[s][k], strings.ReplaceAll(v, "%i", name))
			}
		}
	}
	return out
}

// wantedBy is the unit's [Install] WantedBy=, split into targets.
func (u unit) wantedBy() []string {
	var out []string
	for _, v := range u["Install"]["WantedBy"] {
		out = append(out, strings.Fields(v)...)
	}
	return out
}
