package synctl

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry/registrytest"
)

// chromiumDOM loads url in headless Chromium and returns the DOM it built.
func chromiumDOM(t *testing.T, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+t.TempDir(), "--dump-dom", url).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom %s: %v", url, err)
	}
	return string(out)
}

func TestServePage(t *testing.T) {
	if _, err := exec.LookPath("chromium"); err != nil {
		t.Fatal("chromium is not installed (make deps installs it)")
	}
	w := newWorld(t, "zookeeper")
	port := testserver.FreePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		var out, errb bytes.Buffer
		env := Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }, Now: time.Now, By: "t"}
		done <- Main(ctx, append([]string{"serve", "--listen", fmt.Sprintf("127.0.0.1:%d", port)}, w.flag...), env)
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("serve exited %d", code)
		}
	})
	registrytest.Eventually(t, 10*time.Second, "page served", func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 200 && strings.Contains(string(body), "127.0.0.12")
	})
	first := time.Now()
	dom := chromiumDOM(t, url)
	chromiumStart := time.Since(first) // what Chromium alone costs a load
	for _, want := range []string{`<h1>syncstack fleet</h1>`, `<th scope="col">State</th>`, `<caption>web: 3 backends</caption>`,
		`<td>synapse-1</td><td>in sync</td>`, `http-equiv="refresh" content="2"`} {
		if !strings.Contains(dom, want) {
			t.Errorf("page lacks %s:\n%s", want, dom)
		}
	}

	if code, out, errs := w.synctl(t, "drain", "127.0.0.12", "--reason", "disk swap", "--wait"); code != 0 {
		t.Fatalf("drain: %d %s%s", code, out, errs)
	}
	drained := time.Now()
	dom = chromiumDOM(t, url)
	took := time.Since(drained)
	// The state is in words, not only in a colour.
	row := `<td>127.0.0.12</td>`
	i := strings.Index(dom, row)
	if i < 0 || !strings.Contains(dom[i:i+400], "<td>drain</td>") || !strings.Contains(dom[i:i+400], "disk swap") {
		t.Fatalf("after the drain the page does not show 127.0.0.12 drained with its reason:\n%s", dom)
	}
	if !strings.Contains(dom, "<td>127.0.0.12</td><td>drain</td><td>-</td><td>all</td><td>disk swap</td><td>tester@test</td>") {
		t.Errorf("the active override is not listed:\n%s", dom)
	}
	t.Logf("drain → page in Chromium shows it: %v (Chromium start included; the page re-reads the registry every load and reloads every 2 s)", took)
	if took > 2*time.Second+2*chromiumStart {
		t.Errorf("page took %v to show the drain (Chromium alone: %v)", took, chromiumStart)
	}

	// Off loopback is refused: the page has no authentication.
	var out, errb bytes.Buffer
	env := Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }, Now: time.Now, By: "t"}
	if code := Main(context.Background(), append([]string{"serve", "--listen", "0.0.0.0:9999"}, w.flag...), env); code != 2 || !strings.Contains(errb.String(), "not a loopback") {
		t.Errorf("serve on 0.0.0.0: exit %d %s", code, errb.String())
	}
}
