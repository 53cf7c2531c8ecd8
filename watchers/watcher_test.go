package watchers

import (
	"strings"
	"testing"

	"github.com/syncstack/syncstack/internal/confutil"
	"github.com/syncstack/syncstack/registry"
)

// Airbnb's forms: the base method (default_servers only) is static, and
// dns names without a port (Airbnb's own examples) are warned about, not
// refused; a static server without a port stays an error.
func TestFinalizeAirbnbForms(t *testing.T) {
	var p confutil.Problems
	base := Config{Method: "base"}
	base.Finalize("d", 0, &p)
	if base.Method != "static" || p.Err("") != nil {
		t.Errorf("base: method %q, %v", base.Method, p.Err(""))
	}
	dns := Config{Method: "dns", Servers: []Server{{registry.Instance{Host: "0.www.example.com"}}}}
	dns.Finalize("d", 0, &p)
	if p.Err("") != nil || len(dns.Warnings) != 1 || !strings.Contains(dns.Warnings[0], "0.www.example.com") {
		t.Errorf("dns without a port: %v, warnings %q", p.Err(""), dns.Warnings)
	}
	static := Config{Method: "static", Servers: []Server{{registry.Instance{Host: "10.0.0.1"}}}}
	static.Finalize("d", 0, &p)
	if err := p.Err(""); err == nil || !strings.Contains(err.Error(), "d.servers[0].port") {
		t.Errorf("static without a port: %v", err)
	}
}
