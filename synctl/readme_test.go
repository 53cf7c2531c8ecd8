package synctl

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The README's operations guide runs as written: every synctl command line
// in its shell blocks, against a test registry (its hosts mapped onto the
// test's, its registry flag onto the test's).
func TestREADMEOperationsGuide(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	guide := string(readme)
	start := strings.Index(guide, "## Operations guide")
	if start < 0 {
		t.Fatal("README has no Operations guide section")
	}
	guide = guide[start:]
	if end := strings.Index(guide[3:], "\n## "); end >= 0 {
		guide = guide[:end+3]
	}
	var lines []string
	for _, block := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(guide, -1) {
		for _, l := range strings.Split(block[1], "\n") {
			l = strings.TrimSpace(l)
			if i := strings.Index(l, " #"); i >= 0 {
				l = strings.TrimSpace(l[:i])
			}
			if strings.HasPrefix(l, "synctl ") {
				lines = append(lines, l)
			}
		}
	}
	if len(lines) < 2 {
		t.Fatalf("found %d synctl commands in the guide: %q", len(lines), lines)
	}
	w := newWorld(t, "zookeeper")
	hosts := strings.NewReplacer("10.0.0.11", "127.0.0.11", "10.0.0.12", "127.0.0.12", "10.0.0.13", "127.0.0.13")
	registryFlag := regexp.MustCompile(`--(zk|etcd) \S+`)
	for _, l := range lines {
		args := shellWords(t, hosts.Replace(l))[1:]
		var cmd []string
		for i := 0; i < len(args); i++ {
			if args[i] == "--zk" || args[i] == "--etcd" {
				i++ // the test's registry instead
				continue
			}
			cmd = append(cmd, args[i])
		}
		if !registryFlag.MatchString(l) {
			t.Errorf("guide command %q names no registry", l)
		}
		// The guide's form: the registry flags first.
		var out, errs bytes.Buffer
		env := Env{Stdout: &out, Stderr: &errs, Getenv: func(string) string { return "" }, Now: time.Now, By: "tester@test"}
		if code := Main(context.Background(), append(append([]string{}, w.flag...), cmd...), env); code != 0 {
			t.Errorf("README: %s\n  → exit %d\n%s%s", l, code, out.String(), errs.String())
		}
	}
}

// shellWords splits a command line the way sh would for the guide's simple
// quoting (double quotes, no escapes).
func shellWords(t *testing.T, l string) []string {
	var out []string
	var cur strings.Builder
	inQuote, inWord := false, false
	for _, r := range l {
		switch {
		case r == '"':
			inQuote, inWord = !inQuote, true
		case r == ' ' && !inQuote:
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
			}
			inWord = false
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inQuote {
		t.Fatalf("unbalanced quotes in %q", l)
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out
}
