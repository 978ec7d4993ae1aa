// Package ruletest runs rule unit tests in the manner of promtool's: a test
// file names rule files, delivers input records at steps of a test clock and
// states the violations expected at evaluation times.
//
// A test drives the real engine (engine.Partition over an in-memory
// snapshot), so what a test shows is what the monitor does with the same
// records read at the same times. The file format is described in the
// README's "Writing rules" section and on File.
package ruletest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/strictyaml"
	"github.com/invmon/invmon/internal/violation"
)

// DefaultStart is a test's clock zero when the file sets no `start`.
var DefaultStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// DefaultEvaluationInterval is how often the clock ticks between records and
// evaluation times when the file sets no `evaluation_interval`: 1s, the
// consumer's default tick.
const DefaultEvaluationInterval = time.Second

// Pos, Error and Errors are the rule format's: a test file's problems read
// exactly like a rule file's, `file:line:col: message`.
type (
	// Pos is a position in a test file, 1-based like editors show it.
	Pos = rules.Pos
	// Error is one problem in a test file, located at a line and column.
	Error = rules.Error
	// Errors is every problem found in a test file; parsing does not stop at
	// the first one, so an author fixes a file in one pass.
	Errors = rules.Errors
)

// File is a parsed rule test file:
//
//	rule_files: [captured_payment_has_ledger_entry.yaml]  # relative to this file; globs allowed
//	start: 2026-01-01T00:00:00Z                           # the clock's zero (default shown)
//	evaluation_interval: 1s                               # clock ticks between steps (default 1s; 0s: none)
//	tests:
//	  - name: late ledger entry resolves
//	    input:                                            # delivered in order, each at clock `at`
//	      - {topic: payments, partition: 0, key: acct-1, at: 0s, value: {event_id: e1, occurred_at: '${t}'}}
//	      - {topic: ledger, at: 50s, raw: '{"entry_id": "l1", "occurred_at": "${t+50s}"}'}
//	    eval:
//	      - at: 40s
//	        violations: [{rule: captured_payment_has_ledger_entry, key: p1, state: open}]
//	        dead_letters: 0
//
// In `value` and `raw` strings, ${t}, ${t+D} and ${t-D} (D a duration
// such as 30s, 1m30s, 250ms or 1d, as in rule files) become the RFC 3339 time start+D, and $${
// is a literal "${".
type File struct {
	// Path is the test file's name as given.
	Path string
	// RuleFiles are the rule file patterns, resolved against the test file's
	// directory.
	RuleFiles []string
	// Start is the test clock's zero.
	Start time.Time
	// EvaluationInterval is how often the watermarks are advanced between
	// records and evaluation times, like the consumer's tick; 0 advances them
	// only at records and evaluation times.
	EvaluationInterval time.Duration
	// Tests are the file's tests, in file order.
	Tests []*Test

	ruleFilesPos Pos
}

// Test is one scenario: records delivered on a fresh monitor, and the
// violations expected at evaluation times.
type Test struct {
	Name string
	Pos  Pos
	// Input is in delivery order; At never decreases.
	Input []*Input
	// Eval is in time order.
	Eval []*Eval
}

// Input is one record delivered to the monitor.
type Input struct {
	Pos       Pos
	Topic     string
	Partition int32
	// Key is the Kafka record key; nil when the file sets none.
	Key []byte
	// At is the clock time, since the start, at which the record is read.
	At time.Duration
	// Timestamp is the record's Kafka timestamp since the start; At unless set.
	Timestamp time.Duration
	// Value is the record value: `value` encoded as JSON, or `raw` as is.
	Value []byte
}

// Eval is an evaluation time and what must hold then.
type Eval struct {
	Pos Pos
	// At is the clock time since the start.
	At time.Duration
	// Violations is the exact multiset of violations recorded by then, over
	// every partition.
	Violations []Expected
	// DeadLetters is how many input records read by then were rejected
	// (malformed, or an expression failed on them); 0 unless set, so that a
	// mistyped field cannot make a near-miss test pass without being judged.
	DeadLetters int
}

// Expected identifies a violation as a test states it.
type Expected struct {
	Rule  string
	Key   string
	State violation.State
	Pos   Pos
}

// String renders the violation as a YAML flow mapping, so that a `got` line
// of a failure can be pasted into the test file.
func (e Expected) String() string {
	return fmt.Sprintf("{rule: %s, key: %s, state: %s}", yamlString(e.Rule), yamlString(e.Key), e.State)
}

// yamlString quotes s only when YAML would otherwise read it as something
// else than the same string.
func yamlString(s string) string {
	var v string
	if s != "" && !strings.ContainsAny(s, ",{}[]#:&*!|>'\"%@`") && yaml.Unmarshal([]byte(s), &v) == nil && v == s {
		return s
	}
	b, _ := json.Marshal(s)
	return string(b)
}

// ParseFile reads and validates a test file. On failure the error is an
// Errors value with every problem found, each with its line and column.
func ParseFile(path string) (*File, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read test file: %w", err)
	}
	return Parse(path, src)
}

// Parse validates a test file given as its contents; path names it in errors
// and anchors its relative rule_files.
func Parse(path string, src []byte) (*File, error) {
	d := &decoder{file: path}
	f := d.parse(src)
	if len(d.errs) > 0 {
		return nil, d.errs
	}
	return f, nil
}

// decoder walks the YAML nodes with package strictyaml, the strict reading
// rule files get too, so that every problem is reported at its place.
type decoder struct {
	file  string
	errs  Errors
	start time.Time
}

func (d *decoder) pos(n *yaml.Node) Pos { return Pos{File: d.file, Line: n.Line, Column: n.Column} }

func (d *decoder) errorf(n *yaml.Node, format string, args ...any) {
	d.report(n, fmt.Sprintf(format, args...))
}

func (d *decoder) parse(src []byte) *File {
	f := &File{Path: d.file, Start: DefaultStart, EvaluationInterval: DefaultEvaluationInterval}
	var root yaml.Node
	if err := yaml.Unmarshal(src, &root); err != nil {
		d.errs = append(d.errs, rules.YAMLError(d.file, err))
		return nil
	}
	if len(root.Content) == 0 {
		d.errs = append(d.errs, &Error{Pos: Pos{File: d.file, Line: 1, Column: 1}, Message: "empty test file"})
		return nil
	}
	doc := root.Content[0]
	fields := d.fields(doc, "rule_files", "start", "evaluation_interval", "tests")
	if fields == nil {
		return nil
	}
	if n := fields["start"]; n != nil {
		if s, ok := d.scalar(n, "start"); ok {
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				d.errorf(n, "start: %q is not an RFC 3339 time such as 2026-01-01T00:00:00Z", s)
			} else {
				f.Start = t.UTC()
			}
		}
	}
	d.start = f.Start
	if n := fields["evaluation_interval"]; n != nil {
		if iv, ok := d.duration(n, "evaluation_interval"); ok {
			f.EvaluationInterval = iv
		}
	}
	f.ruleFilesPos = d.pos(doc)
	if n := fields["rule_files"]; n == nil {
		d.errorf(doc, "rule_files is required")
	} else {
		f.ruleFilesPos = d.pos(n)
		items := d.list(n, "rule_files")
		if items != nil && len(items) == 0 {
			d.errorf(n, "rule_files: name at least one rule file")
		}
		dir := filepath.Dir(d.file)
		for _, it := range items {
			if s, ok := d.scalar(it, "rule_files entry"); ok {
				if s == "" {
					d.errorf(it, "rule_files: empty file name")
					continue
				}
				if !filepath.IsAbs(s) {
					s = filepath.Join(dir, s)
				}
				f.RuleFiles = append(f.RuleFiles, s)
			}
		}
	}
	if n := fields["tests"]; n == nil {
		d.errorf(doc, "tests is required")
	} else {
		items := d.list(n, "tests")
		if items != nil && len(items) == 0 {
			d.errorf(n, "tests: the file has no test")
		}
		names := map[string]Pos{}
		for _, it := range items {
			t := d.test(it)
			if t == nil {
				continue
			}
			if prev, ok := names[t.Name]; ok {
				d.errorf(it, "test %q: duplicate test name, first at %s", t.Name, prev)
			}
			names[t.Name] = t.Pos
			f.Tests = append(f.Tests, t)
		}
	}
	return f
}

func (d *decoder) test(n *yaml.Node) *Test {
	fields := d.fields(n, "name", "input", "eval")
	if fields == nil {
		return nil
	}
	t := &Test{Pos: d.pos(n)}
	if nn := fields["name"]; nn == nil {
		d.errorf(n, "test: name is required")
	} else if s, ok := d.scalar(nn, "name"); ok {
		if strings.TrimSpace(s) == "" {
			d.errorf(nn, "test: name is empty")
		}
		t.Name = s
	}
	var prev time.Duration
	if in := fields["input"]; in != nil {
		for _, it := range d.list(in, "input") {
			rec := d.input(it, prev)
			if rec == nil {
				continue
			}
			if rec.At < prev {
				d.errorf(it, "input: at %s is before the previous record's %s: records are delivered in order and the clock never goes back", rec.At, prev)
			}
			prev = rec.At
			t.Input = append(t.Input, rec)
		}
	}
	ev := fields["eval"]
	if ev == nil {
		d.errorf(n, "test %q: eval is required: a test without evaluation times checks nothing", t.Name)
		return t
	}
	items := d.list(ev, "eval")
	if items != nil && len(items) == 0 {
		d.errorf(ev, "test %q: eval is empty: a test without evaluation times checks nothing", t.Name)
	}
	for _, it := range items {
		if e := d.eval(it); e != nil {
			t.Eval = append(t.Eval, e)
		}
	}
	sort.SliceStable(t.Eval, func(i, j int) bool { return t.Eval[i].At < t.Eval[j].At })
	if len(t.Eval) > 0 {
		last := t.Eval[len(t.Eval)-1].At
		for _, rec := range t.Input {
			if rec.At > last {
				d.errs = append(d.errs, &Error{Pos: rec.Pos, Message: fmt.Sprintf(
					"input: at %s is after the last evaluation (%s): no evaluation would see this record", rec.At, last)})
			}
		}
	}
	return t
}

func (d *decoder) input(n *yaml.Node, prevAt time.Duration) *Input {
	fields := d.fields(n, "topic", "partition", "key", "at", "timestamp", "value", "raw")
	if fields == nil {
		return nil
	}
	rec := &Input{Pos: d.pos(n), At: prevAt}
	if tn := fields["topic"]; tn == nil {
		d.errorf(n, "input: topic is required")
	} else if s, ok := d.scalar(tn, "topic"); ok {
		rec.Topic = s
	}
	if pn := fields["partition"]; pn != nil {
		if s, ok := d.scalar(pn, "partition"); ok {
			p, err := strconv.ParseInt(s, 10, 32)
			if err != nil || p < 0 {
				d.errorf(pn, "partition: %q is not a partition number (0, 1, ...)", s)
			}
			rec.Partition = int32(p)
		}
	}
	if kn := fields["key"]; kn != nil {
		if s, ok := d.scalar(kn, "key"); ok {
			rec.Key = []byte(s)
		}
	}
	if an := fields["at"]; an != nil {
		if at, ok := d.duration(an, "at"); ok {
			rec.At = at
		}
	}
	rec.Timestamp = rec.At
	if tn := fields["timestamp"]; tn != nil {
		if ts, ok := d.duration(tn, "timestamp"); ok {
			rec.Timestamp = ts
		}
	}
	vn, rn := fields["value"], fields["raw"]
	switch {
	case vn != nil && rn != nil:
		d.errorf(rn, "input: give either value or raw, not both")
	case vn != nil:
		var b strings.Builder
		if d.json(&b, vn) {
			rec.Value = []byte(b.String())
		}
	case rn != nil:
		if s, ok := d.scalar(rn, "raw"); ok {
			if s, ok = d.expand(rn, s); ok {
				rec.Value = []byte(s)
			}
		}
	default:
		d.errorf(n, "input: value (a mapping, sent as JSON) or raw (a string, sent as is) is required")
	}
	return rec
}

func (d *decoder) eval(n *yaml.Node) *Eval {
	fields := d.fields(n, "at", "violations", "dead_letters")
	if fields == nil {
		return nil
	}
	e := &Eval{Pos: d.pos(n)}
	if an := fields["at"]; an == nil {
		d.errorf(n, "eval: at is required")
	} else if at, ok := d.duration(an, "at"); ok {
		e.At = at
	}
	if dn := fields["dead_letters"]; dn != nil {
		if s, ok := d.scalar(dn, "dead_letters"); ok {
			k, err := strconv.Atoi(s)
			if err != nil || k < 0 {
				d.errorf(dn, "dead_letters: %q is not a count (0, 1, ...)", s)
			}
			e.DeadLetters = k
		}
	}
	if vn := fields["violations"]; vn != nil {
		for _, it := range d.list(vn, "violations") {
			vf := d.fields(it, "rule", "key", "state")
			if vf == nil {
				continue
			}
			x := Expected{Pos: d.pos(it)}
			for _, name := range []string{"rule", "key", "state"} {
				fn := vf[name]
				if fn == nil {
					d.errorf(it, "violation: %s is required", name)
					continue
				}
				s, ok := d.scalar(fn, name)
				if !ok {
					continue
				}
				switch name {
				case "rule":
					x.Rule = s
				case "key":
					x.Key = s
				case "state":
					x.State = violation.State(s)
					if x.State != violation.Open && x.State != violation.Resolved {
						d.errorf(fn, "state: %q is not a violation state (open or resolved)", s)
					}
				}
			}
			e.Violations = append(e.Violations, x)
		}
	}
	return e
}

// report is the decoder's strictyaml.Report: a problem at its node.
func (d *decoder) report(at *yaml.Node, msg string) {
	d.errs = append(d.errs, &Error{Pos: d.pos(at), Message: msg})
}

// fields, list and scalar read a node strictly, as rule files are read.
func (d *decoder) fields(n *yaml.Node, known ...string) map[string]*yaml.Node {
	return strictyaml.Mapping(n, known, d.report)
}

func (d *decoder) list(n *yaml.Node, what string) []*yaml.Node {
	return strictyaml.List(n, what, d.report)
}

func (d *decoder) scalar(n *yaml.Node, what string) (string, bool) {
	return strictyaml.Scalar(n, what, d.report)
}

// duration reads a duration as rule files write it (30s, 1m30s, 250ms, 1d).
// Clock times are offsets from the start, so a test never spells out a
// timestamp.
func (d *decoder) duration(n *yaml.Node, what string) (time.Duration, bool) {
	if s, ok := d.scalar(n, what); ok && strings.HasPrefix(s, "-") {
		d.errorf(n, "%s: %s is negative: clock times count from the test's start", what, s)
		return 0, false
	}
	return strictyaml.Duration(n, what, d.report)
}
