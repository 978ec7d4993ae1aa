package sim

import (
	"sort"

	"github.com/invmon/invmon/internal/violation"
)

// Score compares what a monitor found for one rule with the truth.
type Score struct {
	Injected       int `json:"injected"`
	Found          int `json:"found"`
	Missed         int `json:"missed"`
	FalsePositives int `json:"false_positives"`
	// Duplicates counts violations reported more than once for one key.
	Duplicates int `json:"duplicates"`
	// ResolvedExpected and ResolvedFound count violations repaired by a late
	// event, in the truth and among those found.
	ResolvedExpected int `json:"resolved_expected"`
	ResolvedFound    int `json:"resolved_found"`
	// MissedKeys and FalseKeys name up to ten examples of each.
	MissedKeys []string `json:"missed_keys,omitempty"`
	FalseKeys  []string `json:"false_keys,omitempty"`
}

// Compare scores the violations found against the truth, per rule. Every
// rule in rules gets a score, so a rule that found nothing still shows.
func Compare(truth Truth, found []violation.Violation, rules []string) map[string]*Score {
	out := map[string]*Score{}
	for _, r := range rules {
		out[r] = &Score{}
	}
	want := map[string]map[string]Expected{}
	for _, e := range truth.Violations {
		if out[e.Rule] == nil {
			out[e.Rule] = &Score{}
		}
		if want[e.Rule] == nil {
			want[e.Rule] = map[string]Expected{}
		}
		want[e.Rule][e.Key] = e
		out[e.Rule].Injected++
		if e.Resolved {
			out[e.Rule].ResolvedExpected++
		}
	}
	seen := map[string]map[string]bool{}
	for _, v := range found {
		s := out[v.Rule]
		if s == nil {
			s = &Score{}
			out[v.Rule] = s
		}
		if seen[v.Rule] == nil {
			seen[v.Rule] = map[string]bool{}
		}
		if seen[v.Rule][v.Key] {
			s.Duplicates++
			continue
		}
		seen[v.Rule][v.Key] = true
		if _, ok := want[v.Rule][v.Key]; ok {
			s.Found++
			if v.State == violation.Resolved {
				s.ResolvedFound++
			}
		} else {
			s.FalsePositives++
			if len(s.FalseKeys) < 10 {
				s.FalseKeys = append(s.FalseKeys, v.Key)
			}
		}
	}
	for rule, keys := range want {
		names := make([]string, 0, len(keys))
		for k := range keys {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			if !seen[rule][k] {
				out[rule].Missed++
				if len(out[rule].MissedKeys) < 10 {
					out[rule].MissedKeys = append(out[rule].MissedKeys, k)
				}
			}
		}
	}
	return out
}
