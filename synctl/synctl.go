// Package synctl is the operator's tool: fleet-wide drain, maint, weight and
// add-to-lb through overrides written once to the registry and applied by
// every synapse, with a dry run, safety limits, an audit trail, and a wait
// until the fleet has applied a change. cmd/synctl is a thin main around Main.
package synctl

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/syncstack/syncstack/internal/confutil"
	"github.com/syncstack/syncstack/internal/secretfile"
	"github.com/syncstack/syncstack/internal/version"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/etcd"
	"github.com/syncstack/syncstack/registry/zookeeper"
)

// Exit codes.
const (
	ExitOK     = 0
	ExitFailed = 1
	ExitUsage  = 2
)

// Env is what Main needs from the outside world; tests fill it in.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	Now            func() time.Time
	// By names the operator in overrides and the audit trail.
	By string
	// Terminal: Stderr is a terminal, so progress lines are for a person.
	Terminal bool
}

// DefaultEnv is the process's own.
func DefaultEnv() Env {
	by := "unknown"
	if u, err := user.Current(); err == nil {
		by = u.Username
	}
	if h, err := os.Hostname(); err == nil {
		by += "@" + h
	}
	term := false
	if fi, err := os.Stderr.Stat(); err == nil {
		term = fi.Mode()&os.ModeCharDevice != 0
	}
	return Env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, Now: time.Now, By: by, Terminal: term}
}

// usageError marks a bad command line: exit 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

const topUsage = `synctl: fleet-wide drain and add-to-lb through the registry.

Usage:
  synctl drain HOST[,HOST...] [--service S] [--reason TEXT] [--for DURATION] [--wait [--timeout D]] [--dry-run] [--force]
  synctl maint HOST[,HOST...] [same flags as drain]
  synctl add-to-lb HOST[,HOST...] [--service S] [--wait [--timeout D]] [--dry-run]
  synctl weight HOST[,HOST...] N|reset [--service S] [--wait] [--dry-run]
  synctl confirm SERVICE[,SERVICE...] --reason TEXT [--for 10m] [--wait]   (let go removals the synapses' panic threshold holds)
  synctl status [SERVICE]
  synctl history [--limit N]
  synctl serve [--listen 127.0.0.1:9393]   (a read-only page of the fleet, on loopback)
  synctl setup-zk --services /services --nerve-auth-file F --synapse-auth-file F   (ZooKeeper ACLs, as the operator)
  synctl setup-etcd-roles --services /services [--nerve-user U ...]   (etcd roles, as etcd's root)
  synctl drain|maint|add-to-lb HOST --local [--socket PATH]   (the local HAProxy, when the registry is down)

The registry: --zk host:port,... or --etcd http://host:port,... (or SYNCTL_ZK, SYNCTL_ETCD,
or --config FILE with zk/etcd/root/services/etcd_security), --root (default /syncstack).
ZooKeeper credentials (user:password in a file, mode 0600): --zk-auth-file (or SYNCTL_ZK_AUTH_FILE).
A secured etcd: --etcd-cacert, --etcd-cert, --etcd-key, --etcd-user, --etcd-password-file.
The services and their paths come from the catalogs every synapse leaves in the registry.
Every change is posted to --webhook [json=|slack=]URL (repeatable; SYNCTL_WEBHOOKS, or webhooks
in the config file): when written, with its plan, and when the fleet has applied it (with --wait).
Every command takes --output text|json and --help. Exit codes: 0 ok, 1 failed, 2 usage.
synctl --version prints the build; synctl completion bash|zsh prints shell completion.
`

// Main runs one synctl command line and returns the exit code.
func Main(ctx context.Context, args []string, env Env) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(env.Stdout, topUsage)
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	if args[0] == "--version" || args[0] == "-version" || args[0] == "version" {
		fmt.Fprintln(env.Stdout, version.Line("synctl"))
		return ExitOK
	}
	cmd, rest, err := hoistCommand(args)
	if err != nil {
		fmt.Fprintf(env.Stderr, "synctl: %v\nRun 'synctl --help'.\n", err)
		return ExitUsage
	}
	switch cmd {
	case "drain":
		err = runSet(ctx, env, cmd, registry.StateDrain, rest)
	case "maint":
		err = runSet(ctx, env, cmd, registry.StateMaint, rest)
	case "add-to-lb":
		err = runAddToLB(ctx, env, rest)
	case "weight":
		err = runWeight(ctx, env, rest)
	case "confirm":
		err = runConfirm(ctx, env, rest)
	case "status":
		err = runStatus(ctx, env, rest)
	case "history":
		err = runHistory(ctx, env, rest)
	case "serve":
		err = runServe(ctx, env, rest)
	case "setup-zk":
		err = runSetupZK(ctx, env, rest)
	case "setup-etcd-roles":
		err = runSetupEtcdRoles(ctx, env, rest)
	case "completion":
		err = runCompletion(env, rest)
	case "__complete":
		runComplete(ctx, env, rest)
	default:
		err = usagef("unknown command %q (%s)", cmd, strings.Join(commands, ", "))
	}
	var ue usageError
	code := ExitFailed
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, flag.ErrHelp):
		return ExitOK
	case errors.As(err, &ue):
		code = ExitUsage
		fmt.Fprintf(env.Stderr, "synctl %s: %v\nRun 'synctl %s --help'.\n", cmd, err, cmd)
	default:
		fmt.Fprintf(env.Stderr, "synctl %s: %v\n", cmd, err)
	}
	if wantsJSON(rest) {
		// A script that asked for JSON gets JSON for failures too.
		je := jsonError{Error: err.Error(), Code: code}
		var re refusalError
		if errors.As(err, &re) {
			je.Plan = re.plan
		}
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(je)
	}
	return code
}

// jsonError is what --output json prints on stdout for a failed command.
type jsonError struct {
	Error string     `json:"error"`
	Code  int        `json:"code"`
	Plan  []capacity `json:"plan,omitempty"` // a refused change: what it would have done
}

// refusalError is a change the safety limits refused, with its plan.
type refusalError struct {
	msg  string
	plan []capacity
}

func (e refusalError) Error() string { return e.msg }

// wantsJSON reports whether the command line asks for --output json.
func wantsJSON(args []string) bool {
	for i, a := range args {
		a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if a == "output=json" || (a == "output" && i+1 < len(args) && args[i+1] == "json") {
			return true
		}
	}
	return false
}

// hoistCommand finds the command in a command line whose global flags may
// come before it (synctl --zk zk1:2181 drain H, as in kubectl, git and
// etcdctl) and returns it with every other argument, the leading flags
// first.
func hoistCommand(args []string) (cmd string, rest []string, err error) {
	if !strings.HasPrefix(args[0], "-") {
		return args[0], args[1:], nil
	}
	var c common
	fs := flag.NewFlagSet("synctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.register(fs)
	if err := fs.Parse(args); err != nil {
		return "", nil, fmt.Errorf("before the command only the registry flags (--zk, --etcd, --config, --root, --output, ...) may come: %v", err)
	}
	after := fs.Args()
	if len(after) == 0 {
		return "", nil, errors.New("no command given (drain, maint, add-to-lb, weight, status, history)")
	}
	leading := args[:len(args)-len(after)]
	rest = append(append([]string{}, leading...), after[1:]...)
	return after[0], rest, nil
}

// common are the flags every command takes.
type common struct {
	zk, etcd, root, config, output string
	zkAuthFile                     string // --zk-auth-file: user:password, never the secret itself
	etcdSec                        etcd.Security
	opTimeout                      time.Duration
	services                       map[string]string // from --config
	webhooks                       []webhook         // --webhook, SYNCTL_WEBHOOKS, or the config's
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.zk, "zk", "", "ZooKeeper servers, host:port,... (env SYNCTL_ZK)")
	fs.StringVar(&c.zkAuthFile, "zk-auth-file", "", "ZooKeeper: file holding the operator's digest credentials, user:password (env SYNCTL_ZK_AUTH_FILE)")
	fs.StringVar(&c.etcd, "etcd", "", "etcd endpoints, http://host:port,... (env SYNCTL_ETCD)")
	fs.StringVar(&c.etcdSec.CAFile, "etcd-cacert", "", "etcd: CA certificate (PEM) of the servers (env SYNCTL_ETCD_CACERT)")
	fs.StringVar(&c.etcdSec.CertFile, "etcd-cert", "", "etcd: client certificate (PEM) (env SYNCTL_ETCD_CERT)")
	fs.StringVar(&c.etcdSec.KeyFile, "etcd-key", "", "etcd: client key (PEM) (env SYNCTL_ETCD_KEY)")
	fs.StringVar(&c.etcdSec.Username, "etcd-user", "", "etcd: user name (env SYNCTL_ETCD_USER)")
	fs.StringVar(&c.etcdSec.PasswordFile, "etcd-password-file", "", "etcd: file holding the password (env SYNCTL_ETCD_PASSWORD_FILE)")
	fs.StringVar(&c.root, "root", "", "registry root of overrides, acks and history (default /syncstack)")
	fs.StringVar(&c.config, "config", "", "config file: {zk: [...], etcd: [...], root: ..., services: {name: path}}")
	fs.StringVar(&c.output, "output", "text", "text or json")
	fs.DurationVar(&c.opTimeout, "registry-timeout", 5*time.Second, "bound on each registry call")
	fs.Func("webhook", "tell a webhook of every change: [json=|slack=]URL, repeatable (env SYNCTL_WEBHOOKS, space-separated)", func(s string) error {
		h, err := parseWebhook(s)
		c.webhooks = append(c.webhooks, h)
		return err
	})
}

// fileConfig is synctl's optional config file.
type fileConfig struct {
	ZK       []string          `yaml:"zk"`
	Etcd     []string          `yaml:"etcd"`
	Root     string            `yaml:"root"`
	Services map[string]string `yaml:"services"`
	// EtcdSecurity as in synapse's and nerve's configs.
	EtcdSecurity etcd.Security `yaml:"etcd_security"`
	// Webhooks are told of every change.
	Webhooks []webhook `yaml:"webhooks"`
	// ZKAuthFile holds the operator's ZooKeeper digest credentials.
	ZKAuthFile string `yaml:"zk_auth_file"`
}

// parse parses interspersed flags and positional arguments.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	defer helpers.Delete(fs)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				if help, ok := helpers.Load(fs); ok {
					help.(func())()
				}
				return nil, err
			}
			return nil, usageError{err.Error() + hint(fs, err)}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// hint says in one line what a flag whose value did not parse wants.
func hint(fs *flag.FlagSet, err error) string {
	var name string
	fs.VisitAll(func(f *flag.Flag) {
		if strings.Contains(err.Error(), " -"+f.Name+":") {
			name = f.Name
		}
	})
	if name == "" {
		return ""
	}
	switch fs.Lookup(name).Value.(flag.Getter).Get().(type) {
	case time.Duration:
		return " (want a duration such as 30m or 2h)"
	case int:
		return " (want a whole number)"
	case bool:
		return " (want true or false)"
	}
	return ""
}

// helpers holds each flag set's full usage, printed only for --help: an
// error gets one line and a pointer to it, not fifty lines of flags.
var helpers sync.Map // *flag.FlagSet → func()

func newFlagSet(env Env, name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet("synctl "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	helpers.Store(fs, func() {
		fmt.Fprintf(env.Stdout, "Usage: synctl %s\n\nFlags:\n", usage)
		fs.SetOutput(env.Stdout)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	})
	return fs
}

// connect makes the registry client the flags, environment or config name.
func (c *common) connect(env Env) (registry.Backend, error) {
	if c.output != "text" && c.output != "json" {
		return nil, usagef("--output %q: want text or json", c.output)
	}
	var fc fileConfig
	if c.config != "" {
		if err := confutil.DecodeFile(c.config, &fc); err != nil {
			return nil, usagef("%v", err)
		}
		c.services = fc.Services
		for i := range fc.Webhooks {
			if err := fc.Webhooks[i].validate(); err != nil {
				return nil, usagef("%s: webhooks[%d]: %v", c.config, i, err)
			}
		}
	}
	if len(c.webhooks) == 0 {
		for _, s := range strings.Fields(env.Getenv("SYNCTL_WEBHOOKS")) {
			h, err := parseWebhook(s)
			if err != nil {
				return nil, usagef("SYNCTL_WEBHOOKS: %v", err)
			}
			c.webhooks = append(c.webhooks, h)
		}
	}
	if len(c.webhooks) == 0 {
		c.webhooks = fc.Webhooks
	}
	zk, et := c.zk, c.etcd
	if zk == "" && et == "" {
		zk, et = env.Getenv("SYNCTL_ZK"), env.Getenv("SYNCTL_ETCD")
	}
	if zk == "" && et == "" {
		zk, et = strings.Join(fc.ZK, ","), strings.Join(fc.Etcd, ",")
	}
	root := c.root
	if root == "" {
		root = fc.Root
	}
	if root == "" {
		root = "/syncstack"
	}
	quiet := registry.NewMetrics(nil)
	switch {
	case zk != "" && et != "":
		return nil, usagef("both a ZooKeeper and an etcd registry given: pick one")
	case zk != "":
		authFile := cmp.Or(c.zkAuthFile, env.Getenv("SYNCTL_ZK_AUTH_FILE"), fc.ZKAuthFile)
		b, err := zookeeper.New(zookeeper.Config{Servers: splitList(zk), Root: root, OpTimeout: c.opTimeout, Metrics: quiet, Logger: quietLogger(), AuthFile: authFile})
		if err != nil {
			return nil, usagef("%v", err)
		}
		return b, nil
	case et != "":
		ecfg := etcd.Config{Endpoints: splitList(et), Root: root, OpTimeout: c.opTimeout, Metrics: quiet, Logger: quietLogger()}
		sec := c.security(env, fc.EtcdSecurity)
		// A password or key others can read is not the operator's alone.
		for _, f := range []string{sec.PasswordFile, sec.KeyFile} {
			if f == "" {
				continue
			}
			if err := secretfile.Check(f); err != nil {
				return nil, usagef("etcd security: %v", err)
			}
		}
		if err := sec.Apply(&ecfg); err != nil {
			return nil, usagef("etcd security: %v", err)
		}
		b, err := etcd.New(ecfg)
		if err != nil {
			return nil, usagef("%v", err)
		}
		return b, nil
	}
	return nil, usagef("no registry: give --zk or --etcd (or SYNCTL_ZK, SYNCTL_ETCD, --config)")
}

// security merges the etcd security settings, field by field: flags, then
// the environment, then the config file.
func (c *common) security(env Env, file etcd.Security) etcd.Security {
	s := c.etcdSec
	for _, f := range []struct {
		dst       *string
		env, file string
	}{
		{&s.CAFile, "SYNCTL_ETCD_CACERT", file.CAFile},
		{&s.CertFile, "SYNCTL_ETCD_CERT", file.CertFile},
		{&s.KeyFile, "SYNCTL_ETCD_KEY", file.KeyFile},
		{&s.Username, "SYNCTL_ETCD_USER", file.Username},
		{&s.PasswordFile, "SYNCTL_ETCD_PASSWORD_FILE", file.PasswordFile},
	} {
		if *f.dst == "" {
			*f.dst = env.Getenv(f.env)
		}
		if *f.dst == "" {
			*f.dst = f.file
		}
	}
	if s.ServerName == "" {
		s.ServerName = file.ServerName
	}
	return s
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func emit(env Env, c *common, v any, text func(io.Writer)) {
	if c.output == "json" {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(v)
		return
	}
	text(env.Stdout)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
