package rules

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/invmon/invmon/internal/strictyaml"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"
)

// LoadFiles reads, validates and compiles rule files. Patterns may be globs.
// On failure the error is an Errors value listing every problem found, each
// with file, line and column.
func LoadFiles(patterns ...string) (*RuleSet, error) {
	var files []string
	for _, p := range patterns {
		matches, err := filepath.Glob(p)
		if err != nil {
			return nil, fmt.Errorf("rule file pattern %q: %w", p, err)
		}
		if len(matches) == 0 && !strings.ContainsAny(p, "*?[") {
			matches = []string{p}
		}
		files = append(files, matches...)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no rule files match %q", patterns)
	}
	sources := make(map[string][]byte, len(files))
	for _, f := range files {
		b, err := readLimited(f)
		if err != nil {
			return nil, fmt.Errorf("read rule file: %w", err)
		}
		sources[f] = b
	}
	return Parse(files, sources)
}

// Parse validates and compiles rule files given as contents keyed by name,
// in the order of names.
func Parse(names []string, sources map[string][]byte) (*RuleSet, error) {
	l := &loader{
		set:         &RuleSet{Files: names, Streams: map[string]*Stream{}},
		ruleAt:      map[string]Pos{},
		streamNodes: map[string]*yaml.Node{},
	}
	var err error
	if l.events, err = eventEnv(); err != nil {
		return nil, fmt.Errorf("cel environment: %w", err)
	}
	if l.aggs, err = aggregateEnv(); err != nil {
		return nil, fmt.Errorf("cel environment: %w", err)
	}
	for _, name := range names {
		l.file(name, sources[name])
	}
	if len(l.errs) > 0 {
		return nil, l.errs
	}
	l.set.Warnings = l.warns
	h := sha256.New()
	for _, r := range l.set.Rules {
		h.Write([]byte(r.Name + "=" + r.Version + "\n"))
	}
	l.set.Version = hex.EncodeToString(h.Sum(nil)[:8])
	return l.set, nil
}

type loader struct {
	set         *RuleSet
	events      *cel.Env
	aggs        *cel.Env
	errs        Errors
	warns       Errors
	ruleAt      map[string]Pos
	streamNodes map[string]*yaml.Node
}

// validName reports whether s is a valid Prometheus label name in the
// legacy syntax [a-zA-Z_][a-zA-Z0-9_]*: rule names become the alertname
// label and metric label values, lookup names CEL identifiers, and
// Alertmanager rejects a whole batch for one bad label name.
func validName(s string) bool { return model.LegacyValidation.IsValidLabelName(s) }

func (l *loader) file(name string, src []byte) {
	if len(src) > MaxFileBytes {
		l.errs = append(l.errs, &Error{Pos: Pos{File: name, Line: 1, Column: 1}, Message: fmt.Sprintf("rule file is larger than %d bytes", MaxFileBytes)})
		return
	}
	c := &compiler{file: name, lines: strings.Split(string(src), "\n"), events: l.events, aggs: l.aggs, errs: &l.errs, checks: &l.set.checks, warns: &l.warns}
	var root yaml.Node
	if err := yaml.Unmarshal(src, &root); err != nil {
		l.errs = append(l.errs, YAMLError(name, err))
		return
	}
	// Before anything walks the tree: nested aliases would make every walk
	// below exponential.
	if err := checkYAMLSize(&root, func(n *yaml.Node) Pos { return Pos{File: name, Line: n.Line, Column: n.Column} }); err != nil {
		l.errs = append(l.errs, err)
		return
	}
	if len(root.Content) == 0 {
		l.errs = append(l.errs, &Error{Pos: Pos{File: name, Line: 1, Column: 1}, Message: "empty rule file"})
		return
	}
	doc := root.Content[0]
	loc := func(n *yaml.Node) Pos { return Pos{File: name, Line: n.Line, Column: n.Column} }
	before := len(l.errs)
	checkFields(doc, fileType, loc, errCtx{}, &l.errs)
	if len(l.errs) > before {
		return
	}
	var spec fileSpec
	if err := doc.Decode(&spec); err != nil {
		l.errs = append(l.errs, YAMLError(name, err))
		return
	}
	streamNames := make([]string, 0, len(spec.Streams))
	for n := range spec.Streams {
		streamNames = append(streamNames, n)
	}
	sort.Strings(streamNames)
	for _, sn := range streamNames {
		l.stream(c, sn, spec.Streams[sn])
	}
	for _, r := range spec.Rules {
		l.rule(c, r)
	}
}

var fileType = reflectTypeOf[fileSpec]()

// YAMLError turns a yaml.v3 error into an Error at the line it names, so
// that a syntax error reads like every other problem of a rule or test file.
func YAMLError(file string, err error) *Error {
	// yaml.v3 reports "yaml: line N: msg" (or a list of such lines for type
	// errors); lift the line into the position so the format stays uniform.
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:\n  ")
	line := 0
	if n, _ := fmt.Sscanf(msg, "line %d:", &line); n == 1 {
		_, rest, _ := strings.Cut(msg, ": ")
		return &Error{Pos: Pos{File: file, Line: line, Column: 1}, Message: rest, Err: err}
	}
	return &Error{Pos: Pos{File: file, Line: 1, Column: 1}, Message: msg, Err: err}
}

func (l *loader) duration(c *compiler, s Scalar, ctx errCtx, what string, def time.Duration) time.Duration {
	if !s.Set {
		return def
	}
	if s.notScalar {
		l.errs = append(l.errs, ctx.at(c.pos(s, 1, 0), what+": expected a duration such as 30s"))
		return def
	}
	d, err := strictyaml.ParseDuration(s.Value)
	if err != nil {
		l.errs = append(l.errs, ctx.at(c.pos(s, 1, 0), strictyaml.BadDuration(what, s.Value)))
		return def
	}
	return d
}

func (l *loader) required(c *compiler, s Scalar, at Pos, ctx errCtx, what string) bool {
	if !s.Set || (strings.TrimSpace(s.Value) == "" && !s.notScalar) {
		l.errs = append(l.errs, ctx.at(at, what+" is required"))
		return false
	}
	return true
}

func (l *loader) stream(c *compiler, name string, s *streamSpec) {
	ctx := errCtx{stream: name}
	at := Pos{File: c.file, Line: s.raw.Line, Column: s.raw.Column}
	if prev, ok := l.set.Streams[name]; ok {
		// The same stream may be declared by several files, so each rule file
		// stands alone; the declarations must agree.
		if canonical(prev.spec.raw) != canonical(s.raw) {
			l.errs = append(l.errs, ctx.at(at, fmt.Sprintf("declared differently at %s", prev.pos)))
		}
		return
	}
	st := &Stream{Name: name, Format: "json", spec: s, pos: at}
	if l.required(c, s.Topic, at, ctx, "topic") {
		st.Topic = s.Topic.Value
	}
	if s.Format.Set {
		if !slices.Contains(Formats, s.Format.Value) {
			l.errs = append(l.errs, ctx.at(c.pos(s.Format, 1, 0), fmt.Sprintf("format %q is not supported (supported: %s)", s.Format.Value, strings.Join(Formats, ", "))))
		} else {
			st.Format = s.Format.Value
		}
	}
	st.Subject = st.Topic + "-value"
	if s.Subject.Set {
		if st.Format == FormatJSON {
			l.errs = append(l.errs, ctx.at(c.pos(s.Subject, 1, 0), "subject: only streams with a Schema Registry format (avro, protobuf, json_schema) have one"))
		}
		st.Subject = s.Subject.Value
	}
	for _, other := range l.set.Streams {
		if other.Topic == st.Topic && other.Format != st.Format {
			l.errs = append(l.errs, ctx.at(at, fmt.Sprintf("topic %q is read as %s by stream %q: one topic has one format", st.Topic, other.Format, other.Name)))
		}
	}
	c.stream = st
	if l.required(c, s.ID, at, ctx, "id") {
		st.ID = c.stringExpr(s.ID, ctx, "id")
	}
	if l.required(c, s.Key, at, ctx, "key") {
		st.Key = c.stringExpr(s.Key, ctx, "key")
	}
	if l.required(c, s.Time, at, ctx, "time") {
		st.Time = c.timeExpr(s.Time, ctx, "time")
	}
	st.AllowedLateness = l.duration(c, s.AllowedLateness, ctx, "allowed_lateness", DefaultAllowedLateness)
	st.IdleAfter = l.duration(c, s.IdleAfter, ctx, "idle_after", DefaultIdleAfter)
	st.MaxLag = l.duration(c, s.MaxLag, ctx, "max_lag", 0)
	st.MaxHold = l.duration(c, s.MaxHold, ctx, "max_hold", 0)
	l.set.Streams[name] = st
	l.streamNodes[name] = s.raw
}

func (l *loader) rule(c *compiler, r *ruleSpec) {
	at := Pos{File: c.file, Line: r.raw.Line, Column: r.raw.Column}
	ctx := errCtx{inRule: true, rule: r.Name.Value}
	if !l.required(c, r.Name, at, ctx, "name") {
		return
	}
	if !validName(r.Name.Value) {
		l.errs = append(l.errs, ctx.at(c.pos(r.Name, 1, 0), "name must match [a-zA-Z_][a-zA-Z0-9_]* (it becomes the alertname)"))
	}
	if prev, ok := l.ruleAt[r.Name.Value]; ok {
		l.errs = append(l.errs, ctx.at(c.pos(r.Name, 1, 0), fmt.Sprintf("duplicate rule name, first defined at %s", prev)))
		return
	}
	l.ruleAt[r.Name.Value] = c.pos(r.Name, 1, 0)
	rule := &Rule{
		Name:        r.Name.Value,
		Kind:        r.Kind.Value,
		Source:      yamlSource(r.raw),
		Description: r.Description.Value,
		Labels:      map[string]string{},
		Annotations: map[string]string{},
		Impact:      Impact{Unit: r.Impact.unit()},
		Pos:         at,
	}
	for _, k := range slices.Sorted(maps.Keys(r.Labels)) {
		v := r.Labels[k]
		if !validName(k) || k == "alertname" || k == "severity" {
			p := c.pos(v, 1, 0)
			if p.Line == 0 {
				p = at // a null value has no position of its own
			}
			l.errs = append(l.errs, ctx.at(p, fmt.Sprintf("label %q: not a valid label name, or reserved (alertname and severity are set by the monitor)", k)))
			continue
		}
		if v.notScalar {
			l.errs = append(l.errs, ctx.at(c.pos(v, 1, 0), fmt.Sprintf("label %q: value must be a string, not a list or mapping", k)))
			continue
		}
		rule.Labels[k] = v.Value
	}
	for _, k := range slices.Sorted(maps.Keys(r.Annotations)) {
		v := r.Annotations[k]
		p := c.pos(v, 1, 0)
		if p.Line == 0 {
			p = at
		}
		if v.notScalar {
			l.errs = append(l.errs, ctx.at(p, fmt.Sprintf("annotation %q: value must be a string, not a list or mapping", k)))
			continue
		}
		if err := checkAnnotation(r.Name.Value+"/"+k, v.Value); err != nil {
			l.errs = append(l.errs, ctx.at(p, fmt.Sprintf("annotation %q: %v", k, err)))
			continue
		}
		rule.Annotations[k] = v.Value
	}
	l.objective(c, r, rule, ctx)
	if !l.required(c, r.Kind, at, ctx, "kind") {
		return
	}
	c, rule.Lookups = l.lookups(c, r, ctx)
	var streams []string
	switch r.Kind.Value {
	case KindAbsence:
		rule.Absence, streams = l.absence(c, r, at, ctx)
	case KindUnique:
		rule.Unique, streams = l.unique(c, r, at, ctx)
	case KindTransition:
		rule.Transition, streams = l.transition(c, r, at, ctx)
	case KindState:
		rule.State, streams = l.state(c, r, at, ctx)
	default:
		l.errs = append(l.errs, ctx.at(c.pos(r.Kind, 1, 0), fmt.Sprintf("unknown kind %q (supported: %s)", r.Kind.Value, strings.Join(supportedKinds, ", "))))
		return
	}
	// Impact is judged on the trigger's event.
	c.stream = l.triggerStream(r)
	if r.Impact != nil {
		if r.Impact.Value.Set {
			rule.Impact.Value = c.numberExpr(r.Impact.Value, ctx, "impact.value")
		}
		if r.Impact.Customer.Set {
			rule.Impact.Customer = c.stringExpr(r.Impact.Customer, ctx, "impact.customer")
		}
	}
	seen := map[string]bool{}
	for i, s := range r.Severity {
		if !s.Name.Set || s.Name.Value == "" {
			l.errs = append(l.errs, ctx.at(at, fmt.Sprintf("severity[%d]: name is required", i)))
			continue
		}
		if seen[s.Name.Value] {
			l.errs = append(l.errs, ctx.at(c.pos(s.Name, 1, 0), fmt.Sprintf("severity %q defined twice", s.Name.Value)))
		}
		seen[s.Name.Value] = true
		tier := SeverityTier{Name: s.Name.Value}
		if s.When.Set {
			tier.cond, _ = c.compile(c.aggs, s.When, ctx, "severity "+s.Name.Value, cel.BoolType)
		}
		rule.Severity = append(rule.Severity, tier)
	}
	for _, lk := range rule.Lookups {
		streams = append(streams, lk.Stream.Name)
	}
	rule.Version = l.ruleVersion(r, streams)
	l.set.Rules = append(l.set.Rules, rule)
}

// triggerStream is the stream whose events trigger r's violations: the
// event that impact and lookup keys read. Nil when the rule names none.
func (l *loader) triggerStream(r *ruleSpec) *Stream {
	side := r.On
	if r.Kind.Value == KindAbsence {
		side = r.When
	}
	if side == nil {
		return nil
	}
	return l.set.Streams[side.Stream.Value]
}

func (i *impactSpec) unit() string {
	if i == nil {
		return ""
	}
	return i.Unit.Value
}

func (l *loader) side(c *compiler, s *sideSpec, at Pos, ctx errCtx, what string) (Side, string) {
	var side Side
	if s == nil {
		l.errs = append(l.errs, ctx.at(at, what+" is required"))
		return side, ""
	}
	if !l.required(c, s.Stream, at, ctx, what+".stream") {
		return side, ""
	}
	st, ok := l.set.Streams[s.Stream.Value]
	if !ok {
		l.errs = append(l.errs, ctx.at(c.pos(s.Stream, 1, 0), fmt.Sprintf("%s.stream: unknown stream %q (declare it under streams:)", what, s.Stream.Value)))
		return side, ""
	}
	side.Stream = st
	side.Key = st.Key
	c.stream = st
	if s.Condition.Set {
		side.Condition = c.boolExpr(s.Condition, ctx, what+".if")
	}
	if s.Key.Set {
		side.Key = c.stringExpr(s.Key, ctx, what+".key")
	}
	return side, st.Name
}

func (l *loader) absence(c *compiler, r *ruleSpec, at Pos, ctx errCtx) (*Absence, []string) {
	l.checkKindFields(c, r, ctx)
	a := &Absence{}
	var ws, es string
	a.When, ws = l.side(c, r.When, at, ctx, "when")
	a.Expect, es = l.side(c, r.Expect, at, ctx, "expect")
	if l.required(c, r.Within, at, ctx, "within") {
		a.Within = l.duration(c, r.Within, ctx, "within", 0)
		if _, err := strictyaml.ParseDuration(r.Within.Value); err == nil && a.Within <= 0 {
			l.errs = append(l.errs, ctx.at(c.pos(r.Within, 1, 0), "within must be positive"))
		}
	}
	a.Lookback = l.duration(c, r.Lookback, ctx, "lookback", 0)
	a.RedeliveryWindow = l.duration(c, r.RedeliveryWindow, ctx, "redelivery_window", DefaultRedeliveryWindow(a.Within))
	return a, []string{ws, es}
}

// ruleVersion hashes the rule's definition and the streams it reads, ignoring
// comments and layout, so reformatting a file keeps versions while any change
// of meaning makes a new one. The SLO fields are left out: tuning an
// objective changes what is tolerated, not what is a violation, so it must
// not give every open violation a new id.
func (l *loader) ruleVersion(r *ruleSpec, streams []string) string {
	h := sha256.New()
	h.Write([]byte(canonical(withoutKeys(r.raw, "objective", "slo_window"))))
	for _, s := range streams {
		if n := l.streamNodes[s]; n != nil {
			h.Write([]byte(s + ":" + canonical(n)))
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// canonical renders a YAML node's content without comments or positions.
// yamlSource re-encodes a rule's node for display; "" if it cannot.
func yamlSource(n *yaml.Node) string {
	if n == nil {
		return ""
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return ""
	}
	_ = enc.Close()
	return b.String()
}

func canonical(n *yaml.Node) string {
	var b bytes.Buffer
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n == nil {
			return
		}
		switch n.Kind {
		case yaml.DocumentNode, yaml.SequenceNode:
			b.WriteString("[")
			for _, c := range n.Content {
				walk(c)
				b.WriteString(",")
			}
			b.WriteString("]")
		case yaml.MappingNode:
			type kv struct{ k, v string }
			pairs := make([]kv, 0, len(n.Content)/2)
			for i := 0; i+1 < len(n.Content); i += 2 {
				var vb bytes.Buffer
				b, vb = vb, b
				walk(n.Content[i+1])
				b, vb = vb, b
				pairs = append(pairs, kv{n.Content[i].Value, vb.String()})
			}
			sort.Slice(pairs, func(i, j int) bool { return pairs[i].k < pairs[j].k })
			b.WriteString("{")
			for _, p := range pairs {
				fmt.Fprintf(&b, "%q:%s,", p.k, p.v)
			}
			b.WriteString("}")
		case yaml.AliasNode:
			walk(n.Alias)
		default:
			fmt.Fprintf(&b, "%q", n.Value)
		}
	}
	walk(n)
	return b.String()
}

// DefaultSLOWindow is the period an objective is judged over when a rule
// gives none: 28 days, four whole weeks, so every window holds the same
// number of weekends.
const DefaultSLOWindow = 28 * 24 * time.Hour

// objective reads the rule's consistency SLO: a ratio strictly between 0 and
// 1, and the window it is judged over.
func (l *loader) objective(c *compiler, r *ruleSpec, rule *Rule, ctx errCtx) {
	if r.Objective.Set {
		v, err := strconv.ParseFloat(strings.TrimSpace(r.Objective.Value), 64)
		if r.Objective.notScalar || err != nil || !(v > 0 && v < 1) {
			l.errs = append(l.errs, ctx.at(c.pos(r.Objective, 1, 0), fmt.Sprintf("objective %q must be a ratio between 0 and 1 (exclusive), such as 0.999", r.Objective.Value)))
		} else {
			rule.Objective = v
		}
	}
	if !r.SLOWindow.Set {
		if rule.Objective > 0 {
			rule.SLOWindow = DefaultSLOWindow
		}
		return
	}
	if !r.Objective.Set {
		l.errs = append(l.errs, ctx.at(c.pos(r.SLOWindow, 1, 0), "slo_window without an objective: give objective too (such as 0.999)"))
		return
	}
	w := l.duration(c, r.SLOWindow, ctx, "slo_window", DefaultSLOWindow)
	if w < time.Hour {
		if _, err := strictyaml.ParseDuration(r.SLOWindow.Value); err == nil {
			l.errs = append(l.errs, ctx.at(c.pos(r.SLOWindow, 1, 0), fmt.Sprintf("slo_window %s is too short: an error budget is spent over days or weeks (such as 28d)", r.SLOWindow.Value)))
		}
		w = DefaultSLOWindow
	}
	rule.SLOWindow = w
}

// withoutKeys returns a mapping node without the given keys (n itself when it
// has none of them or is not a mapping).
func withoutKeys(n *yaml.Node, keys ...string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return n
	}
	out := *n
	out.Content = nil
	for i := 0; i+1 < len(n.Content); i += 2 {
		if !slices.Contains(keys, n.Content[i].Value) {
			out.Content = append(out.Content, n.Content[i], n.Content[i+1])
		}
	}
	return &out
}

// readLimited reads a rule file, refusing one larger than MaxFileBytes
// without reading it whole.
func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, err
	}
	return b, nil
}

// YAML styles a CEL expression may be written in.
const (
	literalOrFolded = yaml.LiteralStyle | yaml.FoldedStyle
	quotedStyles    = yaml.DoubleQuotedStyle | yaml.SingleQuotedStyle
)
