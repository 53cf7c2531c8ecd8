package backoff

import "time"

// Pacer spaces out repeated corrections of something another writer keeps
// changing (two processes claiming the same registry record): the first
// two go at once, further ones within Quiet of the last back off, so the
// two writers never fight in a tight loop; after a quiet spell, at once
// again. Not safe for concurrent use.
type Pacer struct {
	b          *Backoff
	quiet      time.Duration
	last, next time.Time
}

// NewPacer returns a Pacer that backs off between base and max while
// corrections come closer together than quiet.
func NewPacer(base, max, quiet time.Duration) *Pacer {
	return &Pacer{b: New(base, max), quiet: quiet}
}

// Hold returns how long to wait before correcting at now; 0: now.
func (p *Pacer) Hold(now time.Time) time.Duration {
	if now.Before(p.next) {
		return p.next.Sub(now)
	}
	if !p.last.IsZero() && now.Sub(p.last) < p.quiet {
		p.next = now.Add(p.b.Next())
	} else {
		p.b.Reset()
		p.next = now
	}
	p.last = now
	return 0
}
