package statekey

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
	IndexByRuleState = Index + "s/"
	IndexByCustomer  = Index + "c/"
	IndexByDetected  = Index + "d/"
	IndexResolved    = Index + "e/"
	IndexForget      = Index + "g/"
)

// DerivedIndexPrefixes are the index families computed from the violation
// records alone (IndexKeys): a store may delete them and write IndexKeys of
// every stored violation again. The forget index is not among them.
var DerivedIndexPrefixes = []string{IndexByRuleState, IndexByCustomer, IndexByDetected, IndexResolved}

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
	b := TimeBytes(t)
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
		keys = append(keys, IndexResolved+string(TimeBytes(*v.ResolvedAt))+v.ID)
	}
	return keys
}
