// Package confutil holds what every syncstack config shares: strict YAML
// decoding (JSON is YAML, so Airbnb's JSON configs load through the same
// path) with errors that name the file and line, durations written as
// seconds or Go duration strings, and problem lists with key paths.
package confutil

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// DecodeFile strictly decodes the YAML or JSON file at path into v:
// unknown keys are errors. Every error names the file.
func DecodeFile(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := Decode(data, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// Decode strictly decodes one YAML (or JSON) document.
func Decode(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("empty config")
		}
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return fmt.Errorf("%s", strings.Join(te.Errors, "; "))
		}
		return err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return errors.New("more than one YAML document")
	}
	return nil
}

// Duration is a time.Duration written as a number of seconds (2, 0.2: the
// way Airbnb's configs write them) or a Go duration string ("200ms").
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a duration must be seconds or a string like \"1.5s\"", n.Line)
	}
	if f, err := strconv.ParseFloat(n.Value, 64); err == nil {
		if f < 0 || math.IsInf(f, 0) || math.IsNaN(f) || f > 1e9 {
			return fmt.Errorf("line %d: duration %s is out of range", n.Line, n.Value)
		}
		*d = Duration(f * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: %q is not a duration (seconds, or like \"1.5s\")", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the Go duration string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Problems collects config problems, each with the key path it is about.
type Problems []string

// Addf records a problem at key.
func (p *Problems) Addf(key, format string, args ...any) {
	*p = append(*p, key+": "+fmt.Sprintf(format, args...))
}

// Err returns nil or one error listing every problem, prefixed by file.
func (p Problems) Err(file string) error {
	if len(p) == 0 {
		return nil
	}
	prefix := ""
	if file != "" {
		prefix = file + ": "
	}
	if len(p) == 1 {
		return errors.New(prefix + p[0])
	}
	return fmt.Errorf("%s%d problems:\n  %s", prefix, len(p), strings.Join(p, "\n  "))
}

// Ignored is a key Airbnb's tools accept and syncstack does not implement:
// it decodes anything and is reported as a warning by the caller.
type Ignored struct{ set bool }

// UnmarshalYAML implements yaml.Unmarshaler.
func (i *Ignored) UnmarshalYAML(*yaml.Node) error { i.set = true; return nil }

// Set reports whether the key was present.
func (i Ignored) Set() bool { return i.set }

// StringOrList is a value Airbnb's configs write either as one string or as
// a list of strings; it joins the list with spaces.
type StringOrList []string

// UnmarshalYAML implements yaml.Unmarshaler.
func (s *StringOrList) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*s = StringOrList{n.Value}
		return nil
	case yaml.SequenceNode:
		var l []string
		if err := n.Decode(&l); err != nil {
			return err
		}
		*s = l
		return nil
	}
	return fmt.Errorf("line %d: want a string or a list of strings", n.Line)
}

// String joins the parts with spaces.
func (s StringOrList) String() string { return strings.Join(s, " ") }

// LoadServiceDir adds to services one service per *.json, *.yaml or *.yml
// file of dir (relative to the directory of the config file configPath),
// named by the file. A missing dir is a problem reported under
// service_conf_dir; a file that fails to decode, or that names a service
// already defined, is an error naming it.
func LoadServiceDir[T any](configPath, dir string, services map[string]*T, p *Problems) error {
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(filepath.Dir(configPath), dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		p.Addf("service_conf_dir", "%v", err)
		return nil
	}
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || (ext != ".json" && ext != ".yaml" && ext != ".yml") {
			continue
		}
		name := strings.TrimSuffix(e.Name(), ext)
		file := filepath.Join(dir, e.Name())
		if _, dup := services[name]; dup {
			return fmt.Errorf("%s: service %q is also defined in %s", file, name, configPath)
		}
		svc := new(T)
		if err := DecodeFile(file, svc); err != nil {
			return err
		}
		services[name] = svc
	}
	return nil
}
