package haproxy

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/registry"
)

// The weight is a runtime setting, never part of what a server was added
// with: a weight change must not look like an option change.
func TestOptsIdentityLeavesWeightOut(t *testing.T) {
	w := func(n int) *int { return &n }
	for _, tc := range []struct {
		name       string
		weight     *int
		recordOpts string
		serverOpts string
		identity   string
		params     string
		weightOf   int
	}{
		{"none", nil, "", "", "", "", 1},
		{"record weight", w(5), "", "", "", " weight 5", 5},
		{"record weight and options", w(5), "maxconn  10", "check", " check maxconn 10", " check maxconn 10 weight 5", 5},
		{"operator weight", nil, "", "check weight 7", " check", " check weight 7", 7},
		// Airbnb's synapse leaves the options' weight out when the
		// server has a weight of its own.
		{"record weight beats operator weight", w(2), "", "check weight 7", " check", " check weight 2", 2},
		{"id and cookie are not options it was added with", nil, "", "check id 4 cookie x", " check", " check id 4 cookie x", 1},
		{"zero", w(0), "", "", "", " weight 0", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := generators.Backend{Instance: registry.Instance{Host: "10.0.0.1", Port: 80, Weight: tc.weight, HAProxyServerOptions: tc.recordOpts}}
			if got := optsIdentity(b, tc.serverOpts); got != tc.identity {
				t.Errorf("optsIdentity = %q, want %q", got, tc.identity)
			}
			p := serverParams(b, tc.serverOpts)
			if p != tc.params {
				t.Errorf("serverParams = %q, want %q", p, tc.params)
			}
			if got := weightOf(p); got != tc.weightOf {
				t.Errorf("weightOf(%q) = %d, want %d", p, got, tc.weightOf)
			}
		})
	}
}

func TestCommandJudge(t *testing.T) {
	for _, tc := range []struct {
		c     command
		reply string
		want  replyResult
	}{
		{command{opAdd, "b/s", "1.2.3.4:80"}, "New server registered.", replyOK},
		{command{opAdd, "b/s", "1.2.3.4:80"}, "Already exists a server with the same name in backend.", replyError},
		{command{opDel, "b/s", ""}, "Server deleted.", replyOK},
		{command{opDel, "b/s", ""}, "Server still has connections attached to it, cannot remove it.", replyBusy},
		{command{opDel, "b/s", ""}, "Only servers in maintenance mode can be deleted.", replyError},
		{command{opSetWeight, "b/s", "5"}, "", replyOK},
		{command{opSetWeight, "b/s", "5"}, "No such server.", replyError},
		{command{opSetAddr, "b/s", "1.2.3.5 port 80"}, "IP changed from '1.2.3.4' to '1.2.3.5' by 'stats socket command'", replyOK},
		{command{opSetState, "b/s", "drain"}, "", replyOK},
	} {
		if got := tc.c.judge(tc.reply); got != tc.want {
			t.Errorf("%s → %q: %v, want %v", tc.c, tc.reply, got, tc.want)
		}
	}
	if got := (command{opSetAddr, "b/s", "1.2.3.5 port 80"}).String(); got != "set server b/s addr 1.2.3.5 port 80" {
		t.Errorf("String() = %q", got)
	}
}

func TestValidationErrorLines(t *testing.T) {
	out := `[NOTICE]   (1) : haproxy version is 2.6.12
[ALERT]    (1) : config : [/d/.haproxy.cfg.candidate:25] : 'server web/x' : 'proto' :  unknown MUX protocol 'nosuch'.
[ALERT]    (1) : config : [/d/.haproxy.cfg.candidate:31] : 'server web/y' : could not resolve address 'nosuch.invalid'.
[ALERT]    (1) : config : [/other/file.cfg:3] : elsewhere.
[ALERT]    (1) : config : Fatal errors found in configuration.`
	e := newValidationError("/d/.haproxy.cfg.candidate", out, errors.New("exit status 1"))
	if len(e.Lines) != 2 || e.Lines[25] == "" || e.Lines[31] != "'server web/y' : could not resolve address 'nosuch.invalid'." {
		t.Errorf("lines = %v", e.Lines)
	}
}

func TestPickPrefersIPv4(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{[]string{"::1", "127.0.0.1"}, "127.0.0.1"},
		{[]string{"::ffff:127.0.0.1"}, "127.0.0.1"},
		{[]string{"::1"}, "::1"},
	} {
		var in []netip.Addr
		for _, s := range tc.in {
			in = append(in, netip.MustParseAddr(s))
		}
		if got := pick(in); got.String() != tc.want {
			t.Errorf("pick(%v) = %v, want %s", tc.in, got, tc.want)
		}
	}
}
