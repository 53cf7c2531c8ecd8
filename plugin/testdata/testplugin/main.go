// testplugin is the plugin the tests drive: its behaviour comes from the
// request's config, or from the file named by "mode_file" (so a test can
// change it while the plugin runs).
package main

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"time"

	"github.com/syncstack/syncstack/plugin"
	"github.com/syncstack/syncstack/registry"
)

type impl struct{}

func mode(cfg map[string]string) string {
	if f := cfg["mode_file"]; f != "" {
		b, _ := os.ReadFile(f)
		return strings.TrimSpace(string(b))
	}
	return cfg["mode"]
}

func act(m string) error {
	switch m {
	case "fail":
		return errors.New("backend says no")
	case "hang":
		time.Sleep(time.Hour)
	case "crash":
		os.Exit(3)
	case "pid":
		return errors.New("pid " + itoa(os.Getpid()))
	}
	return nil
}

func (impl) Check(req plugin.CheckRequest) error {
	if m := mode(req.Config); m != "" && m != "ok" {
		return act(m)
	}
	if req.Host == "" || req.Port == 0 {
		return errors.New("no host and port in the request")
	}
	return nil
}

func (impl) Discover(req plugin.DiscoverRequest) ([]registry.Instance, error) {
	m := mode(req.Config)
	if m != "" && m != "ok" && !strings.HasPrefix(m, "[") {
		return nil, act(m)
	}
	src := req.Config["instances"]
	if strings.HasPrefix(m, "[") {
		src = m
	}
	var set []registry.Instance
	if err := json.Unmarshal([]byte(src), &set); err != nil {
		return nil, err
	}
	return set, nil
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func main() { plugin.Serve(impl{}) }
