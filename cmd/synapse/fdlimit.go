package main

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
)

// fdLimitError is a global maxconn that cannot fit in this process's
// descriptor limit, which the HAProxy synapse starts inherits.
type fdLimitError struct {
	maxconn int
	need    uint64
	limit   uint64
}

func (e fdLimitError) Error() string {
	return fmt.Sprintf("HAProxy cannot start: global `maxconn %d` needs about %d file descriptors (two per connection), "+
		"but the limit is %d (LimitNOFILE= in the systemd unit, or `ulimit -n`): raise the limit or lower maxconn",
		e.maxconn, e.need, e.limit)
}

// checkFDLimit catches, before HAProxy refuses to start ("Cannot raise FD
// limit"), a global maxconn that the descriptor limit cannot hold: HAProxy
// needs 2×maxconn plus a few for its listeners and sockets (2.6 asked for
// 40017 at maxconn 20000 with one listener). HAProxy raises its soft limit
// up to the hard limit by itself, so the hard limit is what counts.
func checkFDLimit(global []string) error {
	maxconn := 0
	for _, l := range global {
		f := strings.Fields(l)
		if len(f) == 2 && f[0] == "maxconn" {
			maxconn, _ = strconv.Atoi(f[1])
		}
	}
	if maxconn <= 0 {
		return nil // HAProxy derives maxconn from the limit itself
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil
	}
	need := 2*uint64(maxconn) + 17
	if need > lim.Max {
		return fdLimitError{maxconn: maxconn, need: need, limit: lim.Max}
	}
	return nil
}
