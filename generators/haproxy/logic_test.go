package haproxy

import (
	"errors"
	"net/netip"
	"strings"
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
		// A record's id goes on the line as the line's id (lineParams),
		// never a second time among its options.
		{"record id", nil, "maxconn 10 id 42", "", " maxconn 10", " maxconn 10", 1},
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
	bs := serverKey{"b", "s"}
	for _, tc := range []struct {
		c     command
		reply string
		want  replyResult
	}{
		{command{opAdd, bs, "1.2.3.4:80"}, "New server registered.", replyOK},
		{command{opAdd, bs, "1.2.3.4:80"}, "Already exists a server with the same name in backend.", replyError},
		{command{opDel, bs, ""}, "Server deleted.", replyOK},
		{command{opDel, bs, ""}, "Server still has connections attached to it, cannot remove it.", replyBusy},
		{command{opDel, bs, ""}, "Only servers in maintenance mode can be deleted.", replyError},
		{command{opSetWeight, bs, "5"}, "", replyOK},
		{command{opSetWeight, bs, "5"}, "No such server.", replyError},
		{command{opSetAddr, bs, "1.2.3.5 port 80"}, "IP changed from '1.2.3.4' to '1.2.3.5' by 'stats socket command'", replyOK},
		{command{opSetState, bs, "drain"}, "", replyOK},
	} {
		if got := tc.c.judge(tc.reply); got != tc.want {
			t.Errorf("%s → %q: %v, want %v", tc.c, tc.reply, got, tc.want)
		}
	}
	if got := (command{opSetAddr, bs, "1.2.3.5 port 80"}).String(); got != "set server b/s addr 1.2.3.5 port 80" {
		t.Errorf("String() = %q", got)
	}
}

// backendMissing reads HAProxy 2.6's answer to `show servers state X`.
func TestBackendMissing(t *testing.T) {
	for reply, want := range map[string]bool{
		"Can't find backend.\n": true,
		"  Can't find backend.": true,
		"1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight": false,
		"": false,
	} {
		if got := backendMissing(reply); got != want {
			t.Errorf("backendMissing(%q) = %v, want %v", reply, got, want)
		}
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

// parseShowProc and parseInfoPID read HAProxy 2.6's answers (captured
// from Debian's 2.6.12).
func TestParseProcAndInfo(t *testing.T) {
	const showProc = "#<PID>          <type>          <reloads>       <uptime>        <version>      \n" +
		"19190           master          1 [failed: 0]   0d00h00m03s     2.6.12-1+deb12u4\n" +
		"# workers\n" +
		"19301           worker          0               0d00h00m00s     2.6.12-1+deb12u4\n" +
		"# old workers\n" +
		"19191           worker          1               0d00h00m03s     2.6.12-1+deb12u4\n" +
		"# programs\n"
	for _, tc := range []struct {
		name, in string
		want     int
		wantErr  bool
	}{
		{"current worker, not the old one", showProc, 19301, false},
		{"no worker (the master re-executes)", "#<PID> <type>\n19190 master 0\n# workers\n# programs\n", 0, true},
		{"empty (connection closed)", "", 0, true},
	} {
		got, err := parseShowProc(strings.NewReader(tc.in))
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("%s: parseShowProc = %d, %v", tc.name, got, err)
		}
	}
	if pid, err := parseInfoPID("Name: HAProxy\nVersion: 2.6.12-1+deb12u4\nPid: 19108\nUptime: 0d 0h00m00s"); pid != 19108 || err != nil {
		t.Errorf("parseInfoPID = %d, %v", pid, err)
	}
	if _, err := parseInfoPID("Name: HAProxy"); err == nil {
		t.Error("parseInfoPID without a Pid line: no error")
	}
}
