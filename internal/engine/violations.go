package engine

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/invmon/invmon/internal/statekey"
	"github.com/invmon/invmon/internal/violation"
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

// getViolation reads a recorded violation; nil when there is none.
func (p *Partition) getViolation(id string) *violation.Violation {
	b, ok := p.get(statekey.Violation + id)
	if !ok || len(b) == 0 {
		return nil // none, or an expired one's id (see expireViolations)
	}
	v := &violation.Violation{}
	if err := json.Unmarshal(b, v); err != nil {
		p.fail(fmt.Errorf("decode violation %s: %w", id, err))
		return nil
	}
	return v
}

// putViolation records v and its secondary keys. Violations stay JSON: the
// API and the alerting side read them as they are.
func (p *Partition) putViolation(v *violation.Violation, prev *violation.Violation) {
	b, err := json.Marshal(v)
	if err != nil {
		// A Violation has only plain fields; failing to encode one is a bug.
		panic(fmt.Sprintf("encode violation: %v", err))
	}
	p.put(statekey.Violation+v.ID, b, prev == nil)
	if prev != nil {
		for _, k := range statekey.IndexKeys(prev) {
			p.del(k)
		}
	}
	for _, k := range statekey.IndexKeys(v) {
		p.put(k, nil, prev == nil)
	}
	p.delta.Changed = append(p.delta.Changed, *v)
}

// Violations returns the violations recorded on this partition. It reads
// them all: for tests and tools, not for the per-event path.
func (p *Partition) Violations() []violation.Violation {
	var out []violation.Violation
	p.scan(statekey.Violation, statekey.PrefixEnd(statekey.Violation), func(_ string, b []byte) bool {
		if len(b) == 0 {
			return true // an expired violation's id
		}
		var v violation.Violation
		if err := json.Unmarshal(b, &v); err != nil {
			p.fail(fmt.Errorf("decode violation: %w", err))
			return false
		}
		out = append(out, v)
		return true
	})
	return out
}

// hasViolation reports whether the trigger's violation is recorded.
func (p *Partition) hasViolation(rule, version, key, eventID string) bool {
	_, ok := p.get(statekey.Violation + violation.ID(rule, version, key, eventID))
	return ok
}
