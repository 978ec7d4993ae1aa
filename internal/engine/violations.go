package engine

import (
	"time"

	"github.com/invmon/invmon/internal/violation"
)

// Secondary keys of violations, written with the violation in the same
// delta (so the changelog carries them too). Each is empty-valued and ends
// in the violation id; the API walks them in key order instead of scanning
// every violation:
//
//	i/s/<rule>\x00<state>\x00<detected_at inverted><id>   by rule and state, detection order
//	i/c/<customer>\x00<detected_at inverted><id>          by customer, detection order
//	i/d/<detected_at inverted><id>                        every violation, detection order
//	i/e/<resolved_at><id>                        resolved ones, for retention
//	i/g/<forget at><id>                          ids of expired ones, kept for dedup
const (
	IndexByRuleState = prefixIndex + "s/"
	IndexByCustomer  = prefixIndex + "c/"
	IndexByDetected  = prefixIndex + "d/"
	indexResolved    = prefixIndex + "e/"
	indexForget      = prefixIndex + "g/"
	// PrefixViolation is the key prefix of violation records (v/<id>).
	PrefixViolation = prefixViolation
)

// RuleStatePrefix is the prefix of the rule-and-state index for one rule
// and state; state "" means every state of the rule.
func RuleStatePrefix(rule string, state violation.State) string {
	if state == "" {
		return IndexByRuleState + rule + "\x00"
	}
	return IndexByRuleState + rule + "\x00" + string(state) + "\x00"
}

// CustomerPrefix is the prefix of the customer index for one customer.
func CustomerPrefix(customer string) string { return IndexByCustomer + customer + "\x00" }

// DetectedOrder encodes a detection time so that later times sort first:
// the index keys list the newest violations first.
func DetectedOrder(t time.Time) []byte {
	b := timeBytes(t)
	for i := range b {
		b[i] = ^b[i]
	}
	return b
}

// IndexKeys returns the secondary keys of v.
func IndexKeys(v *violation.Violation) []string {
	at := string(DetectedOrder(v.DetectedAt)) + v.ID
	keys := []string{
		RuleStatePrefix(v.Rule, v.State) + at,
		IndexByDetected + at,
	}
	if v.Customer != "" {
		keys = append(keys, CustomerPrefix(v.Customer)+at)
	}
	if v.State == violation.Resolved && v.ResolvedAt != nil {
		keys = append(keys, indexResolved+string(timeBytes(*v.ResolvedAt))+v.ID)
	}
	return keys
}

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
	p.scanDue(indexResolved, until(indexResolved, now.Add(-p.retention)), func(k string, _ []byte) bool {
		id := k[len(indexResolved)+8:]
		p.del(k)
		v := p.getViolation(id)
		if v == nil {
			return true
		}
		for _, ik := range IndexKeys(v) {
			p.del(ik)
		}
		// The record shrinks to its id: what dedup needs, nothing the API lists.
		p.put(prefixViolation+id, []byte{}, false)
		p.put(until(indexForget, now.Add(p.retention))+id, nil, true)
		return true
	})
	p.scanDue(indexForget, until(indexForget, now), func(k string, _ []byte) bool {
		p.del(k)
		p.del(prefixViolation + k[len(indexForget)+8:])
		return true
	})
}
