package testserver

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Load sends requests to a URL until Stop: half over fresh connections,
// half over kept-alive ones. Every request that fails or does not answer
// 200 counts as failed. Requests are paced (one per `every` per worker),
// so the load is bounded.
type Load struct {
	OK, Failed atomic.Int64
	stop       chan struct{}
	wg         sync.WaitGroup

	mu       sync.Mutex
	byBody   map[string]int64
	failures []string
}

// StartLoad starts workers sending to url.
func StartLoad(url string, workers int, every time.Duration) *Load {
	l := &Load{stop: make(chan struct{}), byBody: map[string]int64{}}
	for i := range workers {
		tr := &http.Transport{DisableKeepAlives: i%2 == 0, MaxIdleConnsPerHost: 1}
		client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer tr.CloseIdleConnections()
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				select {
				case <-l.stop:
					return
				case <-tick.C:
				}
				l.one(client, url)
			}
		}()
	}
	return l
}

func (l *Load) one(client *http.Client, url string) {
	resp, err := client.Get(url)
	if err != nil {
		l.fail(err.Error())
		return
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		l.fail(fmt.Sprintf("status %d, %v", resp.StatusCode, err))
		return
	}
	l.OK.Add(1)
	l.mu.Lock()
	l.byBody[string(body)]++
	l.mu.Unlock()
}

func (l *Load) fail(why string) {
	l.Failed.Add(1)
	l.mu.Lock()
	if len(l.failures) < 20 {
		l.failures = append(l.failures, time.Now().Format("15:04:05.000")+" "+why)
	}
	l.mu.Unlock()
}

// Stop ends the load and waits for the workers.
func (l *Load) Stop() {
	close(l.stop)
	l.wg.Wait()
}

// Served returns how many good answers each body (backend ID) gave.
func (l *Load) Served() map[string]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int64, len(l.byBody))
	for k, v := range l.byBody {
		out[k] = v
	}
	return out
}

// Failures returns the first failures, with their times.
func (l *Load) Failures() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.failures...)
}
