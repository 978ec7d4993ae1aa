package engine

import (
	"time"

	"github.com/invmon/invmon/internal/statekey"
)

// DefaultViolationRetention is how long a resolved violation is kept after
// its resolution, by default.
const DefaultViolationRetention = 30 * 24 * time.Hour

// SetViolationRetention sets how long resolved violations are kept after
// their resolution (by the clock passed to Advance); d <= 0 keeps the
// default. After that the violation and its secondary keys are deleted, and
// its id is kept for as long again: a trigger re-read within that dedup
// horizon (a producer's retry, a replay of old input) finds the id and does
// not record the violation a second time. Open violations are never
// deleted.
func (p *Partition) SetViolationRetention(d time.Duration) {
	if d > 0 {
		p.retention = d
	}
}

// expireViolations deletes resolved violations past their retention and
// forgets the ids of those expired a retention before: both are range scans
// of time-ordered keys.
func (p *Partition) expireViolations(now time.Time) {
	if now.Year() < 1971 || now.Year() > 2200 {
		return // no clock (a tool's zero time): nothing is judged old
	}
	p.scanDue(statekey.IndexResolved, statekey.Until(statekey.IndexResolved, now.Add(-p.retention)), func(k string, _ []byte) bool {
		id := k[len(statekey.IndexResolved)+8:]
		p.del(k)
		v := p.getViolation(id)
		if v == nil {
			return true
		}
		for _, ik := range statekey.IndexKeys(v) {
			p.del(ik)
		}
		// The record shrinks to its id: what dedup needs, nothing the API lists.
		p.put(statekey.Violation+id, []byte{}, false)
		p.put(statekey.Until(statekey.IndexForget, now.Add(p.retention))+id, nil, true)
		return true
	})
	p.scanDue(statekey.IndexForget, statekey.Until(statekey.IndexForget, now), func(k string, _ []byte) bool {
		p.del(k)
		p.del(statekey.Violation + k[len(statekey.IndexForget)+8:])
		return true
	})
}
