package rules

import (
	"fmt"
	"sort"
	"strings"

	"github.com/google/cel-go/cel"
)

// kindFields lists, per kind, the kind-specific fields it takes; the others
// are errors, so a `window:` on an absence rule is not silently ignored.
var kindFields = map[string][]string{
	KindAbsence:    {"when", "expect", "within", "lookback", "redelivery_window"},
	KindUnique:     {"on", "window"},
	KindTransition: {"on", "state", "version", "initial", "allowed", "retention"},
	KindState:      {"on", "condition", "until", "for", "retention"},
}

// setKindFields returns the kind-specific fields present in r, with where.
func setKindFields(r *ruleSpec) map[string]Scalar {
	at := func(line, col int) Scalar { return Scalar{Line: line, Column: col, Set: true} }
	out := map[string]Scalar{}
	for name, s := range map[string]Scalar{
		"within": r.Within, "lookback": r.Lookback, "redelivery_window": r.RedeliveryWindow, "window": r.Window,
		"state": r.State, "version": r.Version, "condition": r.Condition, "until": r.Until,
		"for": r.For, "retention": r.Retention,
	} {
		if s.Set {
			out[name] = s
		}
	}
	for name, side := range map[string]*sideSpec{"when": r.When, "expect": r.Expect, "on": r.On} {
		if side != nil {
			out[name] = at(side.Stream.Line, side.Stream.Column)
		}
	}
	if len(r.Initial) > 0 {
		out["initial"] = r.Initial[0]
	}
	if len(r.Allowed) > 0 {
		out["allowed"] = at(r.raw.Line, r.raw.Column)
	}
	return out
}

func (l *loader) checkKindFields(c *compiler, r *ruleSpec, ctx errCtx) {
	allowed := map[string]bool{}
	for _, f := range kindFields[r.Kind.Value] {
		allowed[f] = true
	}
	present := setKindFields(r)
	names := make([]string, 0, len(present))
	for n := range present {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if !allowed[n] {
			l.errs = append(l.errs, ctx.at(c.pos(present[n], 1, 0),
				fmt.Sprintf("%s is not a field of %s rules (they take: %s)", n, r.Kind.Value, strings.Join(kindFields[r.Kind.Value], ", "))))
		}
	}
}

// lookups compiles the rule's lookups and returns a compiler whose event
// environment declares them, so the rule's expressions may use them.
func (l *loader) lookups(c *compiler, r *ruleSpec, ctx errCtx) (*compiler, []*Lookup) {
	if len(r.Lookup) == 0 {
		return c, nil
	}
	names := make([]string, 0, len(r.Lookup))
	for n := range r.Lookup {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []*Lookup
	var vars []cel.EnvOption
	// Lookup keys read the trigger's event; so does every expression that
	// follows, until a side names its stream.
	c.stream = l.triggerStream(r)
	for _, n := range names {
		spec := r.Lookup[n]
		at := c.pos(spec.Stream, 1, 0)
		if at.Line == 0 {
			at = c.pos(spec.Key, 1, 0)
		}
		if at.Line == 0 {
			at = Pos{File: c.file, Line: r.raw.Line, Column: r.raw.Column}
		}
		if !validName(n) || n == "event" || n == "record" {
			l.errs = append(l.errs, ctx.at(at, fmt.Sprintf("lookup %q: name must be an identifier other than event and record", n)))
			continue
		}
		if !l.required(c, spec.Stream, at, ctx, "lookup "+n+".stream") || !l.required(c, spec.Key, at, ctx, "lookup "+n+".key") {
			continue
		}
		st, ok := l.set.Streams[spec.Stream.Value]
		if !ok {
			l.errs = append(l.errs, ctx.at(at, fmt.Sprintf("lookup %s.stream: unknown stream %q (declare it under streams:)", n, spec.Stream.Value)))
			continue
		}
		key := c.stringExpr(spec.Key, ctx, "lookup "+n+".key")
		if key == nil {
			continue
		}
		out = append(out, &Lookup{Name: n, Stream: st, Key: key})
		vars = append(vars, cel.Variable(n, cel.MapType(cel.StringType, cel.DynType)))
	}
	if len(vars) == 0 {
		return c, out
	}
	env, err := c.events.Extend(vars...)
	if err != nil {
		l.errs = append(l.errs, ctx.at(Pos{File: c.file, Line: r.raw.Line, Column: r.raw.Column}, fmt.Sprintf("lookups: %v", err)))
		return c, out
	}
	rc := *c
	rc.events = env
	rc.lookups = map[string]*Stream{}
	for _, lk := range out {
		rc.lookups[lk.Name] = lk.Stream
	}
	return &rc, out
}

// onKind checks that r has only its kind's fields and compiles its `on`
// side: the one input of unique, transition and state rules.
func (l *loader) onKind(c *compiler, r *ruleSpec, at Pos, ctx errCtx) (Side, string) {
	l.checkKindFields(c, r, ctx)
	return l.side(c, r.On, at, ctx, "on")
}

func (l *loader) unique(c *compiler, r *ruleSpec, at Pos, ctx errCtx) (*Unique, []string) {
	on, s := l.onKind(c, r, at, ctx)
	u := &Unique{On: on}
	if l.required(c, r.Window, at, ctx, "window") {
		u.Window = l.duration(c, r.Window, ctx, "window", 0)
	}
	return u, []string{s}
}

func (l *loader) transition(c *compiler, r *ruleSpec, at Pos, ctx errCtx) (*Transition, []string) {
	on, s := l.onKind(c, r, at, ctx)
	t := &Transition{On: on, Allowed: map[string]map[string]bool{}}
	if l.required(c, r.State, at, ctx, "state") {
		t.State = c.stringExpr(r.State, ctx, "state")
	}
	if r.Version.Set {
		t.Version = c.numberExpr(r.Version, ctx, "version")
	}
	if len(r.Initial) > 0 {
		t.Initial = map[string]bool{}
		for _, st := range r.Initial {
			t.Initial[st.Value] = true
		}
	}
	if len(r.Allowed) == 0 {
		l.errs = append(l.errs, ctx.at(at, "allowed is required: a mapping from each state to the states it may move to"))
	}
	known := map[string]bool{}
	for from, tos := range r.Allowed {
		known[from] = true
		t.Allowed[from] = map[string]bool{}
		for _, to := range tos {
			t.Allowed[from][to.Value] = true
			known[to.Value] = true
		}
	}
	for st := range t.Initial {
		if !known[st] && len(r.Allowed) > 0 {
			l.errs = append(l.errs, ctx.at(c.pos(r.Initial[0], 1, 0), fmt.Sprintf("initial state %q appears nowhere in allowed", st)))
		}
	}
	t.Retention = l.duration(c, r.Retention, ctx, "retention", DefaultRetention)
	return t, []string{s}
}

func (l *loader) state(c *compiler, r *ruleSpec, at Pos, ctx errCtx) (*StateRule, []string) {
	on, s := l.onKind(c, r, at, ctx)
	sr := &StateRule{On: on}
	if l.required(c, r.Condition, at, ctx, "condition") {
		sr.Condition = c.boolExpr(r.Condition, ctx, "condition")
	}
	switch {
	case r.Until.Set && r.For.Set:
		l.errs = append(l.errs, ctx.at(c.pos(r.For, 1, 0), "give until or for, not both"))
	case r.Until.Set:
		sr.Until = c.timeExpr(r.Until, ctx, "until")
	case r.For.Set:
		sr.For = l.duration(c, r.For, ctx, "for", 0)
	default:
		l.errs = append(l.errs, ctx.at(at, "until (a deadline from the data) or for (a duration) is required"))
	}
	sr.Retention = l.duration(c, r.Retention, ctx, "retention", DefaultRetention)
	return sr, []string{s}
}
