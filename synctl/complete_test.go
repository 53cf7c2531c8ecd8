package synctl

import (
	"bytes"
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func complete(t *testing.T, words ...string) []string {
	t.Helper()
	var out bytes.Buffer
	env := Env{Stdout: &out, Stderr: &bytes.Buffer{}, Getenv: func(string) string { return "" }, Now: time.Now}
	if code := Main(context.Background(), append([]string{"__complete"}, words...), env); code != 0 {
		t.Fatalf("__complete %q: exit %d", words, code)
	}
	return strings.Fields(out.String())
}

func TestCompleteCommandsAndFlags(t *testing.T) {
	tests := []struct {
		words []string
		want  []string // every one of these, and nothing that lacks the typed prefix
	}{
		{[]string{""}, commands},
		{[]string{"dr"}, []string{"drain"}},
		{[]string{"drain", "h", "--fo"}, []string{"--for", "--force"}},
		{[]string{"weight", "--"}, []string{"--force", "--min-up", "--max-drained", "--service", "--wait", "--zk"}},
		{[]string{"history", "--l"}, []string{"--limit"}},
		{[]string{"--zk", "z:1", "serve", "--li"}, []string{"--listen"}},
		{[]string{"status", "--output", ""}, []string{"text", "json"}},
		{[]string{"completion", ""}, []string{"bash", "zsh"}},
	}
	for _, tt := range tests {
		got := complete(t, tt.words...)
		for _, w := range tt.want {
			if !strings.Contains(" "+strings.Join(got, " ")+" ", " "+w+" ") {
				t.Errorf("complete %q = %q, lacks %s", tt.words, got, w)
			}
		}
		for _, g := range got {
			if !strings.HasPrefix(g, tt.words[len(tt.words)-1]) {
				t.Errorf("complete %q offers %q", tt.words, g)
			}
		}
	}
	// Every flag completion offers is one the command accepts.
	for _, cmd := range commands[:7] {
		fs := commandFlags(cmd)
		fs.VisitAll(func(f *flag.Flag) {
			var out, errb bytes.Buffer
			env := Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }, Now: time.Now}
			Main(context.Background(), []string{cmd, "--help"}, env)
			if !strings.Contains(out.String(), "-"+f.Name) {
				t.Errorf("completion offers %s --%s, which its --help does not list", cmd, f.Name)
			}
		})
	}
}

// The scripts, in the real shells, with service names from the registry.
func TestCompletionScripts(t *testing.T) {
	w := newWorld(t, "zookeeper")
	bin := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", bin+"/", "../cmd/synctl").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	path := bin + string(os.PathListSeparator) + os.Getenv("PATH")
	script := filepath.Join(t.TempDir(), "synctl.bash")
	var out bytes.Buffer
	env := Env{Stdout: &out, Stderr: &bytes.Buffer{}, Getenv: func(string) string { return "" }, Now: time.Now}
	if Main(context.Background(), []string{"completion", "bash"}, env) != 0 {
		t.Fatal("completion bash")
	}
	os.WriteFile(script, out.Bytes(), 0o644)
	line := "synctl " + strings.Join(w.flag, " ") + " drain 127.0.0.11 --service "
	bash := exec.Command("bash", "-c", `source "$1"; COMP_WORDS=($2 ""); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _synctl; printf '%s\n' "${COMPREPLY[@]}"`, "bash", script, line)
	bash.Env = append(os.Environ(), "PATH="+path)
	got, err := bash.Output()
	if err != nil || strings.TrimSpace(string(got)) != "web" {
		t.Errorf("bash completion of %q: %q %v", line, got, err)
	}
	bash = exec.Command("bash", "-c", `source "$1"; COMP_WORDS=(synctl ad); COMP_CWORD=1; _synctl; printf '%s\n' "${COMPREPLY[@]}"`, "bash", script)
	bash.Env = append(os.Environ(), "PATH="+path)
	if got, err := bash.Output(); err != nil || strings.TrimSpace(string(got)) != "add-to-lb" {
		t.Errorf("bash completion of 'synctl ad': %q %v", got, err)
	}
	// zsh: the script loads in a real zsh with compinit.
	if _, err := exec.LookPath("zsh"); err != nil {
		t.Fatal("zsh is not installed (make deps installs it)")
	}
	out.Reset()
	Main(context.Background(), []string{"completion", "zsh"}, env)
	zscript := filepath.Join(t.TempDir(), "_synctl")
	os.WriteFile(zscript, out.Bytes(), 0o644)
	zsh := exec.Command("zsh", "-f", "-c", `autoload -Uz compinit && compinit -u -D && source "$1" && print -r -- ${_comps[synctl]}`, "zsh", zscript)
	zsh.Env = append(os.Environ(), "PATH="+path)
	if got, err := zsh.CombinedOutput(); err != nil || strings.TrimSpace(string(got)) != "_synctl" {
		t.Errorf("zsh does not register the completion: %q %v", got, err)
	}
}
