package replay

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/strictyaml"
)

// This file holds what a replay's time semantics derive from the rules: how
// far before the window to read (lead-in), how far past it a deadline can lie
// (horizon), and which side of each rule triggers a violation.

// Select returns a rule set with only the named rules and the streams they
// read, in the original order; no names selects every rule. An unknown name
// is an error listing the known ones.
func Select(rs *rules.RuleSet, names []string) (*rules.RuleSet, error) {
	if len(names) == 0 {
		return rs, nil
	}
	want := map[string]bool{}
	for _, n := range names {
		want[strings.TrimSpace(n)] = true
	}
	out := &rules.RuleSet{Files: rs.Files, Streams: map[string]*rules.Stream{}}
	for _, r := range rs.Rules {
		if !want[r.Name] {
			continue
		}
		delete(want, r.Name)
		out.Rules = append(out.Rules, r)
		for _, s := range r.Streams() {
			out.Streams[s.Name] = s
		}
	}
	if len(want) > 0 {
		var unknown, known []string
		for n := range want {
			unknown = append(unknown, n)
		}
		for _, r := range rs.Rules {
			known = append(known, r.Name)
		}
		sort.Strings(unknown)
		return nil, fmt.Errorf("unknown rules %s (the rule files define: %s)", strings.Join(unknown, ", "), strings.Join(known, ", "))
	}
	// The selection's version hashes the versions of the rules it holds, the
	// way rules.Parse hashes a whole set, so a report names exactly what ran.
	h := sha256.New()
	for _, r := range out.Rules {
		h.Write([]byte(r.Name + "=" + r.Version + "\n"))
	}
	out.Version = hex.EncodeToString(h.Sum(nil)[:8])
	return out, nil
}

// LeadIn is how far before the window a rule needs to have read to judge a
// trigger inside it as the live monitor would: an absence rule's lookback
// (an order fulfilled in the window whose payment was captured the day
// before), a unique rule's window (the first of two entries under one key),
// a state rule's `for` (when the condition began to hold). Transition rules
// judge an entity's first event in the read range against `initial`; their
// history is not bounded by the rule, so --lead-in must cover the entities'
// lifetimes when it matters.
func LeadIn(r *rules.Rule) time.Duration {
	switch {
	case r.Absence != nil:
		return r.Absence.Lookback
	case r.Unique != nil:
		return r.Unique.Window
	case r.State != nil:
		return r.State.For
	}
	return 0
}

// Reach is how far after its trigger a rule's deadline lies: an absence
// rule's `within`, a state rule's `for`. Unique rules judge on arrival and
// transition rules as soon as the watermark passes the event, so theirs is
// zero; a state rule's `until` deadline comes from the data and has no bound
// in the rule.
func Reach(r *rules.Rule) time.Duration {
	switch {
	case r.Absence != nil:
		return r.Absence.Within
	case r.State != nil:
		return r.State.For
	}
	return 0
}

// Horizon is the largest Reach of the rules: the watermark must pass the
// window's end by this much for every deadline inside it to be judged.
func Horizon(rs *rules.RuleSet) time.Duration {
	var h time.Duration
	for _, r := range rs.Rules {
		h = max(h, Reach(r))
	}
	return h
}

// AutoLeadIn is the largest LeadIn of the rules.
func AutoLeadIn(rs *rules.RuleSet) time.Duration {
	var l time.Duration
	for _, r := range rs.Rules {
		l = max(l, LeadIn(r))
	}
	return l
}

// streamTiming returns the largest allowed lateness and idle_after of the
// rules' input streams: the final clock must exceed the newest event read by
// idle_after for idle inputs to let the watermark follow it, and the
// watermark trails the clock by the lateness.
func streamTiming(rs *rules.RuleSet) (lateness, idle time.Duration) {
	for _, r := range rs.Rules {
		for _, s := range r.Inputs() {
			lateness = max(lateness, s.AllowedLateness)
			idle = max(idle, s.IdleAfter)
		}
	}
	return lateness, idle
}

// TriggerSide returns the side of a rule whose events a violation is
// attributed to: an absence rule's `when`, the `on` of the other kinds.
func TriggerSide(r *rules.Rule) *rules.Side {
	switch {
	case r.Absence != nil:
		return &r.Absence.When
	case r.Unique != nil:
		return &r.Unique.On
	case r.Transition != nil:
		return &r.Transition.On
	case r.State != nil:
		return &r.State.On
	}
	return nil
}

// inputTopics returns the topics the rules evaluate, and referenceTopics
// those they only look up, each sorted.
func topicRoles(rs *rules.RuleSet) (inputs, references []string) {
	in := map[string]bool{}
	for _, r := range rs.Rules {
		for _, s := range r.Inputs() {
			in[s.Topic] = true
		}
	}
	ref := map[string]bool{}
	for _, s := range rs.Streams {
		if !in[s.Topic] {
			ref[s.Topic] = true
		}
	}
	return sortedSet(in), sortedSet(ref)
}

func sortedSet(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ruleTopics returns every topic a rule reads, lookups included, sorted.
func ruleTopics(r *rules.Rule) []string {
	m := map[string]bool{}
	for _, s := range r.Streams() {
		m[s.Topic] = true
	}
	return sortedSet(m)
}

// ParseTime reads a time flag: RFC 3339 (`2026-11-20T09:00:00Z`, fractions
// allowed), `now`, or `now` minus a duration as rule files write it (`now-2h`, `now-1d`), relative to now.
func ParseTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "now":
		return now, nil
	case strings.HasPrefix(s, "now-"):
		d, err := strictyaml.ParseDuration(s[len("now-"):])
		if err != nil {
			return time.Time{}, fmt.Errorf("time %q: %w", s, err)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q: want RFC 3339 (2026-11-20T09:00:00Z), now or now-DURATION: %w", s, err)
	}
	return t, nil
}
