// Package confutil holds what every syncstack config shares: strict YAML
// decoding, and strict JSON decoding for .json files (Airbnb's configs),
// with errors that name the file and line, durations written as seconds or
// Go duration strings, and problem lists with key paths.
package confutil

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// DecodeFile strictly decodes the file at path into v: JSON when its name
// ends in .json, YAML otherwise; unknown keys are errors. Every error names
// the file, and the line where there is one.
func DecodeFile(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	decode := Decode
	if strings.EqualFold(filepath.Ext(path), ".json") {
		decode = DecodeJSON
	}
	if err := decode(data, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// DecodeJSON strictly decodes one JSON document. A YAML parser reads most
// JSON, but it also reads what JSON forbids (a trailing comma, an unquoted
// key, a comment) without a word, and refuses some valid JSON (the escape
// \/, surrogate pairs). So the syntax is JSON's, checked first, with the
// line of the error; the value then goes through the same strict YAML
// decoding as a YAML file (unknown keys and wrong types with their line,
// duplicate keys refused), after every string is rewritten into a YAML
// double-quoted string of the same value on the same line.
func DecodeJSON(data []byte, v any) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return errors.New("empty config")
	}
	if err := checkJSON(data); err != nil {
		return err
	}
	return Decode(jsonToYAML(data), v)
}

// checkJSON reports the first JSON syntax error in data, with its line and
// column, or data after the first value.
func checkJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	var raw json.RawMessage
	err := dec.Decode(&raw)
	if err == nil {
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			return fmt.Errorf("%s: data after the JSON document", position(data, dec.InputOffset()))
		}
		return nil
	}
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		// Offset is just past the offending byte.
		return fmt.Errorf("%s: JSON syntax error: %v", position(data, se.Offset-1), se)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return fmt.Errorf("%s: JSON syntax error: unexpected end of file", position(data, int64(len(data))))
	}
	return fmt.Errorf("JSON syntax error: %v", err)
}

// position is "line L, column C" (both from 1) of byte offset off of data.
func position(data []byte, off int64) string {
	off = max(0, min(off, int64(len(data))))
	before := data[:off]
	line := bytes.Count(before, []byte("\n")) + 1
	col := int(off) - (bytes.LastIndexByte(before, '\n') + 1) + 1
	return fmt.Sprintf("line %d, column %d", line, col)
}

// jsonToYAML rewrites valid JSON into YAML with the same value and the same
// lines: each string literal becomes a YAML double-quoted string using only
// the escapes YAML knows, and a tab between tokens becomes a space (YAML
// does not allow tabs everywhere JSON does). Everything else in JSON (flow
// collections, numbers, true, false, null) is already YAML.
func jsonToYAML(data []byte) []byte {
	out := make([]byte, 0, len(data)+len(data)/8)
	for i := 0; i < len(data); i++ {
		c := data[i]
		switch c {
		case '\t':
			out = append(out, ' ')
			continue
		case '"':
		default:
			out = append(out, c)
			continue
		}
		end := i + 1
		for data[end] != '"' {
			if data[end] == '\\' {
				end++
			}
			end++
		}
		var s string
		// The syntax was checked: a literal always decodes.
		_ = json.Unmarshal(data[i:end+1], &s)
		out = appendYAMLQuoted(out, s)
		i = end
	}
	return out
}

// appendYAMLQuoted appends s as a YAML double-quoted scalar on one line:
// printable characters as they are, the rest as \u or \U escapes.
func appendYAMLQuoted(out []byte, s string) []byte {
	out = append(out, '"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			out = append(out, '\\', byte(r))
		case r < 0x80 && r >= 0x20 && r != 0x7f:
			out = append(out, byte(r))
		case r >= 0x80 && unicode.IsPrint(r) && r != '\ufeff':
			out = utf8.AppendRune(out, r)
		case r <= 0xffff:
			out = fmt.Appendf(out, "\\u%04x", r)
		default:
			out = fmt.Appendf(out, "\\U%08x", r)
		}
	}
	return append(out, '"')
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

// ServiceDir resolves a service_conf_dir. A relative one is looked for
// next to the config file first (syncstack's layout), then in the working
// directory (Airbnb's nerve and synapse resolve it there, with
// File.expand_path, and their example layouts rely on it). note says which
// was used when it was not the config's directory, or when both exist.
func ServiceDir(configPath, dir string) (path, note string, err error) {
	if filepath.IsAbs(dir) {
		return dir, "", nil
	}
	nextTo := filepath.Join(filepath.Dir(configPath), dir)
	wd, werr := filepath.Abs(dir)
	isDir := func(p string) bool { st, err := os.Stat(p); return err == nil && st.IsDir() }
	switch {
	case isDir(nextTo):
		absNext, _ := filepath.Abs(nextTo)
		if werr == nil && isDir(wd) && wd != absNext {
			note = fmt.Sprintf("service_conf_dir: %q is both next to the config (%s, used) and in the working directory (%s, ignored)", dir, nextTo, wd)
		}
		return nextTo, note, nil
	case werr == nil && isDir(wd):
		return wd, fmt.Sprintf("service_conf_dir: %q is not next to the config (%s); using %s, relative to the working directory as Airbnb's tools resolve it", dir, nextTo, wd), nil
	}
	return "", "", fmt.Errorf("%q is neither a directory next to the config (%s) nor in the working directory (%s)", dir, nextTo, wd)
}

// LoadServiceDir adds to services one service per *.json, *.yaml or *.yml
// file of dir (resolved by ServiceDir), named by the file. A missing dir
// is a problem reported under service_conf_dir; a file that fails to
// decode, or that names a service already defined, is an error naming it.
// note says where dir was found, when that is worth a warning.
func LoadServiceDir[T any](configPath, dir string, services map[string]*T, p *Problems) (note string, err error) {
	dir, note, err = ServiceDir(configPath, dir)
	if err != nil {
		p.Addf("service_conf_dir", "%v", err)
		return "", nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		p.Addf("service_conf_dir", "%v", err)
		return note, nil
	}
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || (ext != ".json" && ext != ".yaml" && ext != ".yml") {
			continue
		}
		name := strings.TrimSuffix(e.Name(), ext)
		file := filepath.Join(dir, e.Name())
		if _, dup := services[name]; dup {
			return note, fmt.Errorf("%s: service %q is also defined in %s", file, name, configPath)
		}
		svc := new(T)
		if err := DecodeFile(file, svc); err != nil {
			return note, err
		}
		services[name] = svc
	}
	return note, nil
}
