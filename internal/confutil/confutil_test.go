package confutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type testConfig struct {
	Name     string            `yaml:"name"`
	Interval Duration          `yaml:"interval"`
	Hosts    []string          `yaml:"hosts"`
	Labels   map[string]string `yaml:"labels"`
	Nested   struct {
		Port int `yaml:"port"`
	} `yaml:"nested"`
}

func TestDecodeJSON(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		want       testConfig
	}{
		{"plain", `{"name":"web","interval":0.5,"hosts":["a:1","b:2"],"nested":{"port":80}}`,
			testConfig{Name: "web", Interval: Duration(500 * time.Millisecond), Hosts: []string{"a:1", "b:2"}, Nested: struct {
				Port int `yaml:"port"`
			}{80}}},
		// Valid JSON a YAML parser refuses: the \/ escape, a surrogate
		// pair, tabs between tokens.
		{"json escapes", "{\n\t\"name\":\t\"a\\/b \\ud83d\\ude00 \\u00e9 \\\"q\\\" \\\\ \\t\\n\\u2028\\u0000\"\n}",
			testConfig{Name: "a/b \U0001F600 é \"q\" \\ \t\n\u2028\x00"}},
		// Tabs where JSON allows them and YAML does not (before the
		// document, at the start of a line in block context).
		{"tab-indented document", "\n\t\t{\n\t\"name\"\t:\t\"x\"\t}\t\n", testConfig{Name: "x"}},
		{"yaml-looking strings stay strings", `{"name":"yes","hosts":["- x","&a","*a","#c","key: v","{","'"],"labels":{"<<":"null","~":"0x10"}}`,
			testConfig{Name: "yes", Hosts: []string{"- x", "&a", "*a", "#c", "key: v", "{", "'"}, Labels: map[string]string{"<<": "null", "~": "0x10"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got testConfig
			if err := DecodeJSON([]byte(tc.data), &got); err != nil {
				t.Fatal(err)
			}
			if got.Name != tc.want.Name || got.Interval != tc.want.Interval || strings.Join(got.Hosts, "|") != strings.Join(tc.want.Hosts, "|") ||
				got.Nested != tc.want.Nested || len(got.Labels) != len(tc.want.Labels) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
			for k, v := range tc.want.Labels {
				if got.Labels[k] != v {
					t.Errorf("labels[%q] = %q, want %q", k, got.Labels[k], v)
				}
			}
		})
	}
}

func TestDecodeJSONErrors(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		want       []string
	}{
		{"trailing comma in object", "{\n  \"name\": \"web\",\n  \"hosts\": [\"a\"],\n}\n", []string{"line 4, column 1", "JSON syntax error"}},
		{"trailing comma in array", "{\n  \"hosts\": [\"a\",\n  ]\n}", []string{"line 3, column 3", "JSON syntax error"}},
		{"comment", "{\n  // a comment\n  \"name\": \"x\"\n}", []string{"line 2", "JSON syntax error"}},
		{"unquoted key", "{\n  name: \"x\"\n}", []string{"line 2", "JSON syntax error"}},
		{"single quotes", "{\"name\": 'x'}", []string{"line 1, column 10", "JSON syntax error"}},
		{"truncated", "{\n  \"name\": \"x\",\n  \"hosts\": [", []string{"line 3", "unexpected end"}},
		{"data after", "{\"name\":\"x\"}\n{\"name\":\"y\"}", []string{"line 2", "data after"}},
		{"unknown key with its line", "{\n  \"name\": \"x\",\n  \"nested\": {\n    \"port\": 1,\n    \"bogus\": 2\n  }\n}", []string{"line 5", "bogus"}},
		{"wrong type with its line", "{\n\t\"name\": \"x\",\n\t\"nested\": {\"port\": \"eighty\"}\n}", []string{"line 3", "eighty"}},
		{"bad duration with its line", "{\n\n\"interval\": \"soon\"}", []string{"line 3", "soon"}},
		{"duplicate key", "{\n  \"name\": \"x\",\n  \"name\": \"y\"\n}", []string{"line 3", `"name" already defined`}},
		{"empty", " \n", []string{"empty config"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got testConfig
			err := DecodeJSON([]byte(tc.data), &got)
			if err == nil {
				t.Fatalf("no error; decoded %+v", got)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// DecodeFile picks the parser by the file name: a .json file is JSON (a
// trailing comma is a syntax error naming the file and line), anything
// else YAML, in which the same flow text is valid.
func TestDecodeFileByExtension(t *testing.T) {
	dir := t.TempDir()
	body := "{\n  \"name\": \"web\",\n  \"hosts\": [\"a\"],\n}\n"
	for _, tc := range []struct {
		file    string
		wantErr []string
	}{
		{"synapse.conf.json", []string{"synapse.conf.json: line 4, column 1: JSON syntax error"}},
		{"UPPER.JSON", []string{"UPPER.JSON: line 4"}},
		{"synapse.yaml", nil},
		{"synapse.conf", nil},
	} {
		path := filepath.Join(dir, tc.file)
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		var got testConfig
		err := DecodeFile(path, &got)
		if tc.wantErr == nil {
			if err != nil || got.Name != "web" {
				t.Errorf("%s: %+v, %v; want it read as YAML", tc.file, got, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: no error", tc.file)
			continue
		}
		for _, w := range tc.wantErr {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", tc.file, err, w)
			}
		}
	}
}
