package ruletest

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/invmon/invmon/internal/engine"
	"github.com/invmon/invmon/internal/rules"
)

// FileResult is the outcome of one test file's tests.
type FileResult struct {
	Path  string
	Tests []TestResult
}

// Passed reports whether every test of the file passed.
func (r *FileResult) Passed() bool {
	for i := range r.Tests {
		if !r.Tests[i].Passed() {
			return false
		}
	}
	return true
}

// TestResult is the outcome of one test.
type TestResult struct {
	Name string
	Pos  Pos
	// Failures describes each evaluation that did not hold, as readable text
	// (a diff of expected and got violations, or the dead letters).
	Failures []string
}

// Passed reports whether every evaluation of the test held.
func (r *TestResult) Passed() bool { return len(r.Failures) == 0 }

// Run loads the file's rule files and runs each of its tests on a fresh
// monitor. The error reports a file that cannot run (its rules do not load,
// or it names topics or rules that the rules do not have); test failures are
// in the result.
func (f *File) Run() (*FileResult, error) {
	rs, err := rules.LoadFiles(f.RuleFiles...)
	if err != nil {
		return nil, fmt.Errorf("%s: rule_files: %w", f.ruleFilesPos, err)
	}
	if err := f.check(rs); err != nil {
		return nil, err
	}
	res := &FileResult{Path: f.Path}
	for _, t := range f.Tests {
		res.Tests = append(res.Tests, f.run(rs, t))
	}
	return res, nil
}

// check reports input topics that no rule reads and expected rules that do
// not exist: either would let a test pass without testing anything, such as
// a near-miss whose trigger is sent to a misspelt topic.
func (f *File) check(rs *rules.RuleSet) error {
	topics := map[string]bool{}
	for _, s := range rs.Streams {
		topics[s.Topic] = true
	}
	names := map[string]bool{}
	for _, r := range rs.Rules {
		names[r.Name] = true
	}
	var errs Errors
	for _, t := range f.Tests {
		for _, in := range t.Input {
			if !topics[in.Topic] {
				errs = append(errs, &Error{Pos: in.Pos, Message: fmt.Sprintf("input: no stream of the rule files reads topic %q (topics: %s)", in.Topic, strings.Join(slices.Sorted(maps.Keys(topics)), ", "))})
			}
		}
		for _, e := range t.Eval {
			for _, v := range e.Violations {
				if !names[v.Rule] {
					errs = append(errs, &Error{Pos: v.Pos, Message: fmt.Sprintf("violation: the rule files have no rule %q (rules: %s)", v.Rule, strings.Join(slices.Sorted(maps.Keys(names)), ", "))})
				}
			}
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// harness is one test's monitor: a partition evaluator per partition number,
// each over an in-memory snapshot, driven by the test clock.
type harness struct {
	f       *File
	parts   map[int32]*engine.Partition
	ids     []int32
	snaps   map[int32]*engine.MemSnapshot
	offsets map[string]int64
	now     time.Duration
	dead    []deadLetter
}

type deadLetter struct {
	in  *Input
	err error
}

func (f *File) run(rs *rules.RuleSet, t *Test) TestResult {
	res := TestResult{Name: t.Name, Pos: t.Pos}
	h := &harness{f: f, parts: map[int32]*engine.Partition{}, snaps: map[int32]*engine.MemSnapshot{}, offsets: map[string]int64{}}
	ids := map[int32]bool{0: true}
	for _, in := range t.Input {
		ids[in.Partition] = true
	}
	for id := range ids {
		snap := engine.NewMemSnapshot()
		p, err := engine.NewPartition(id, rs, snap, nil, nil, f.Start)
		if err != nil {
			res.Failures = append(res.Failures, fmt.Sprintf("partition %d: %v", id, err))
			return res
		}
		// Everything a test delivers has been read by the time it is
		// delivered: every input is at its high-water mark, so a silent one
		// becomes idle after idle_after as it would in production.
		for _, topic := range p.Topics() {
			p.SetCaughtUp(topic, true)
		}
		h.parts[id], h.snaps[id] = p, snap
		h.ids = append(h.ids, id)
	}
	slices.Sort(h.ids)
	next := 0
	for _, e := range t.Eval {
		for next < len(t.Input) && t.Input[next].At <= e.At {
			// Records read at the same clock time are one poll: all are
			// applied before the watermarks move, as the consumer does.
			at := t.Input[next].At
			h.tick(at)
			for next < len(t.Input) && t.Input[next].At == at {
				if err := h.apply(t.Input[next]); err != nil {
					res.Failures = append(res.Failures, err.Error())
					return res
				}
				next++
			}
			h.advance(at)
		}
		h.tick(e.At)
		h.advance(e.At)
		if msg := h.compare(e); msg != "" {
			res.Failures = append(res.Failures, msg)
		}
	}
	return res
}

// tick advances the watermarks at every evaluation interval strictly between
// the clock and to, then sets the clock to to: the consumer advances every
// tick, so a deadline is judged when it passes, not when the next record
// happens to arrive.
func (h *harness) tick(to time.Duration) {
	if iv := h.f.EvaluationInterval; iv > 0 {
		for at := (h.now/iv + 1) * iv; at < to; at += iv {
			h.advance(at)
		}
	}
	h.now = to
}

func (h *harness) advance(at time.Duration) {
	h.now = at
	now := h.f.Start.Add(at)
	for _, id := range h.ids {
		p := h.parts[id]
		p.Advance(now)
		h.snaps[id].Apply(p.TakeDelta())
	}
}

func (h *harness) apply(in *Input) error {
	p := h.parts[in.Partition]
	tp := fmt.Sprintf("%s[%d]", in.Topic, in.Partition)
	rec := &engine.Record{
		Topic: in.Topic, Partition: in.Partition, Offset: h.offsets[tp],
		Key: in.Key, Value: in.Value, Timestamp: h.f.Start.Add(in.Timestamp),
	}
	h.offsets[tp]++
	err := p.Apply(rec, h.f.Start.Add(in.At))
	h.snaps[in.Partition].Apply(p.TakeDelta())
	var de *engine.DecodeError
	switch {
	case errors.As(err, &de):
		h.dead = append(h.dead, deadLetter{in: in, err: err})
	case err != nil:
		return fmt.Errorf("input at %s: %s@%d: %w", in.Pos, tp, rec.Offset, err)
	}
	return nil
}

// compare checks an evaluation and describes what differs; "" when it holds.
func (h *harness) compare(e *Eval) string {
	var got []Expected
	for _, id := range h.ids {
		for _, v := range h.parts[id].Violations() {
			got = append(got, Expected{Rule: v.Rule, Key: v.Key, State: v.State})
		}
	}
	want := slices.Clone(e.Violations)
	sortViolations(got)
	sortViolations(want)
	missing, unexpected := diff(want, got)
	var b strings.Builder
	if len(missing) > 0 || len(unexpected) > 0 {
		fmt.Fprintf(&b, "eval at %s (%s, %s): violations differ\n", e.At, h.f.Start.Add(e.At).Format(time.RFC3339Nano), e.Pos)
		writeList(&b, "expected", want)
		writeList(&b, "got", got)
		b.WriteString("  diff (- missing, + unexpected):\n")
		for _, v := range missing {
			fmt.Fprintf(&b, "    - %s\n", v)
		}
		for _, v := range unexpected {
			fmt.Fprintf(&b, "    + %s\n", v)
		}
	}
	if len(h.dead) != e.DeadLetters {
		fmt.Fprintf(&b, "eval at %s (%s, %s): dead letters: expected %d, got %d\n", e.At, h.f.Start.Add(e.At).Format(time.RFC3339Nano), e.Pos, e.DeadLetters, len(h.dead))
		for _, d := range h.dead {
			fmt.Fprintf(&b, "    %s: %v\n", d.in.Pos, d.err)
		}
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func writeList(b *strings.Builder, title string, vs []Expected) {
	fmt.Fprintf(b, "  %s:\n", title)
	if len(vs) == 0 {
		b.WriteString("    (none)\n")
	}
	for _, v := range vs {
		fmt.Fprintf(b, "    %s\n", v)
	}
}

func sortViolations(vs []Expected) {
	sort.SliceStable(vs, func(i, j int) bool {
		a, b := vs[i], vs[j]
		if a.Rule != b.Rule {
			return a.Rule < b.Rule
		}
		if a.Key != b.Key {
			return a.Key < b.Key
		}
		return a.State < b.State
	})
}

// diff compares two sorted multisets of violations: two violations of one
// rule for the same key (two triggers) count twice.
func diff(want, got []Expected) (missing, unexpected []Expected) {
	type id struct {
		rule, key, state string
	}
	count := map[id]int{}
	for _, v := range got {
		count[id{v.Rule, v.Key, string(v.State)}]++
	}
	for _, v := range want {
		k := id{v.Rule, v.Key, string(v.State)}
		if count[k] > 0 {
			count[k]--
			continue
		}
		missing = append(missing, v)
	}
	for _, v := range got {
		k := id{v.Rule, v.Key, string(v.State)}
		if count[k] > 0 {
			count[k]--
			unexpected = append(unexpected, v)
		}
	}
	return missing, unexpected
}

// RunFiles parses and runs test files (globs allowed) and writes a report to
// w: SUCCESS or FAILED per test, with what differs for each failure. It
// returns false when a test failed or a file could not be run.
func RunFiles(w io.Writer, patterns ...string) bool {
	var files []string
	ok := true
	for _, p := range patterns {
		matches, err := filepath.Glob(p)
		if err != nil {
			fmt.Fprintf(w, "test file pattern %q: %v\n", p, err)
			ok = false
			continue
		}
		if len(matches) == 0 {
			// Not a pattern, or a pattern that matches nothing: reading it
			// reports the missing file rather than passing on no tests.
			matches = []string{p}
		}
		files = append(files, matches...)
	}
	passed, failed, broken := 0, 0, 0
	for _, name := range files {
		fmt.Fprintf(w, "Unit testing %s\n", name)
		f, err := ParseFile(name)
		if err == nil {
			var res *FileResult
			if res, err = f.Run(); err == nil {
				for _, t := range res.Tests {
					if t.Passed() {
						passed++
						fmt.Fprintf(w, "  SUCCESS  %s\n", t.Name)
						continue
					}
					failed++
					fmt.Fprintf(w, "  FAILED   %s (%s)\n", t.Name, t.Pos)
					for _, msg := range t.Failures {
						fmt.Fprintf(w, "%s\n", indent(msg, "    "))
					}
				}
				if !res.Passed() {
					ok = false
				}
				continue
			}
		}
		ok = false
		broken++
		fmt.Fprintf(w, "  ERROR\n%s\n", indent(err.Error(), "    "))
	}
	verdict := "PASS"
	if !ok {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "%s: %d passed, %d failed, %d files", verdict, passed, failed, len(files))
	if broken > 0 {
		fmt.Fprintf(w, " (%d could not run)", broken)
	}
	fmt.Fprintln(w)
	return ok
}

func indent(s, prefix string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "\n")
}
