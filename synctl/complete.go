package synctl

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

// Shell completion: `synctl completion bash|zsh` prints a script that asks
// `synctl __complete WORDS...` for the candidates, so commands and flags
// come from the same flag sets the commands parse, and service names from
// the registry's catalogs when it answers quickly.

var commands = []string{"drain", "maint", "add-to-lb", "weight", "confirm", "status", "history", "serve", "setup-zk", "setup-etcd-roles", "completion"}

// commandFlags builds the flag set of cmd as the command itself does.
func commandFlags(cmd string) *flag.FlagSet {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f changeFlags
	switch cmd {
	case "drain", "maint":
		f.register(fs, true)
	case "add-to-lb":
		f.register(fs, false)
	case "weight":
		f.register(fs, false)
		f.registerSafety(fs)
	case "confirm":
		f.registerConfirm(fs)
	case "status":
		f.common.register(fs)
		statusFlags(fs)
	case "history":
		f.common.register(fs)
		historyFlags(fs)
	case "serve":
		f.common.register(fs)
		serveFlags(fs)
	case "setup-zk", "setup-etcd-roles":
		f.common.register(fs)
	default:
		return nil
	}
	return fs
}

const bashCompletion = `# bash completion for synctl: source it, or put it in /etc/bash_completion.d/synctl
_synctl() {
	local cur=${COMP_WORDS[COMP_CWORD]}
	local IFS=$'\n'
	COMPREPLY=($(compgen -W "$(synctl __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null)" -- "$cur"))
}
complete -F _synctl synctl
`

const zshCompletion = `#compdef synctl
# zsh completion for synctl: put it on $fpath as _synctl, or source it after compinit
_synctl() {
	local -a candidates
	candidates=(${(f)"$(synctl __complete ${words[2,CURRENT]} 2>/dev/null)"})
	compadd -a candidates
}
compdef _synctl synctl
`

func runCompletion(env Env, args []string) error {
	if len(args) != 1 || (args[0] != "bash" && args[0] != "zsh") {
		return usagef("want bash or zsh")
	}
	if args[0] == "bash" {
		fmt.Fprint(env.Stdout, bashCompletion)
	} else {
		fmt.Fprint(env.Stdout, zshCompletion)
	}
	return nil
}

// runComplete prints the candidates for the last of words (the word being
// typed; the others are the command line before it).
func runComplete(ctx context.Context, env Env, words []string) {
	if len(words) == 0 {
		words = []string{""}
	}
	cur, before := words[len(words)-1], words[:len(words)-1]
	var cmd string
	for _, w := range before {
		if !strings.HasPrefix(w, "-") && cmd == "" && isCommand(w) {
			cmd = w
		}
	}
	print := func(c []string) {
		for _, s := range c {
			if strings.HasPrefix(s, cur) {
				fmt.Fprintln(env.Stdout, s)
			}
		}
	}
	prev := ""
	if len(before) > 0 {
		prev = before[len(before)-1]
	}
	switch {
	case prev == "--service" || prev == "-service":
		print(serviceNames(ctx, env, before))
	case prev == "--output" || prev == "-output":
		print([]string{"text", "json"})
	case cmd == "completion":
		print([]string{"bash", "zsh"})
	case cmd == "" && !strings.HasPrefix(cur, "-"):
		print(commands)
	case strings.HasPrefix(cur, "-"):
		fs := commandFlags(cmd)
		if fs == nil { // before the command: the global flags
			fs = flag.NewFlagSet("global", flag.ContinueOnError)
			new(common).register(fs)
		}
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, "--"+f.Name) })
		print(names)
	}
}

func isCommand(w string) bool {
	for _, c := range commands {
		if c == w {
			return true
		}
	}
	return false
}

// serviceNames reads the catalogs through the registry the command line
// (or the environment) names, giving up quickly: completion never hangs a
// shell on an unreachable registry.
func serviceNames(ctx context.Context, env Env, words []string) []string {
	var c common
	fs := flag.NewFlagSet("complete", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.register(fs)
	var flags []string
	for i := 0; i < len(words); i++ {
		if strings.HasPrefix(words[i], "-") && fs.Lookup(strings.TrimLeft(strings.SplitN(words[i], "=", 2)[0], "-")) != nil {
			flags = append(flags, words[i])
			if !strings.Contains(words[i], "=") && i+1 < len(words) {
				flags = append(flags, words[i+1])
				i++
			}
		}
	}
	if fs.Parse(flags) != nil {
		return nil
	}
	c.opTimeout = time.Second
	b, err := c.connect(env)
	if err != nil {
		return nil
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cats, err := b.Catalogs(ctx)
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	for _, cat := range cats {
		for name := range cat.Services {
			seen[name] = true
		}
	}
	return sortedKeys(seen)
}
