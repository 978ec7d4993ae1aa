package ruletest

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// TestExampleRuleTestsPass runs every rule test file shipped in rules/.
func TestExampleRuleTestsPass(t *testing.T) {
	files, err := filepath.Glob("../../rules/*_test.yml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no rule test files in rules/")
	}
	var out bytes.Buffer
	if !RunFiles(&out, files...) {
		t.Fatalf("rule tests failed:\n%s", out.String())
	}
	if strings.Contains(out.String(), "FAILED") || !strings.Contains(out.String(), "SUCCESS") {
		t.Fatalf("unexpected report:\n%s", out.String())
	}
}

// TestEveryRuleFileHasTests keeps the design's promise that each example rule
// file comes with its rule tests.
func TestEveryRuleFileHasTests(t *testing.T) {
	files, err := filepath.Glob("../../rules/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		test := strings.TrimSuffix(f, ".yaml") + "_test.yml"
		if _, err := os.Stat(test); err != nil {
			t.Errorf("%s has no tests: want %s", f, test)
		}
	}
}

// TestWrongExpectationFails checks that a wrong test fails, with a report
// that shows expected and got violations and a -/+ diff.
func TestWrongExpectationFails(t *testing.T) {
	var out bytes.Buffer
	if RunFiles(&out, "testdata/wrong_expectation_test.yml") {
		t.Fatalf("a wrong expectation passed:\n%s", out.String())
	}
	golden(t, "testdata/wrong_expectation_test.yml.out", out.String())
	for _, want := range []string{
		"  SUCCESS  right\n",
		"  FAILED   wrong (testdata/wrong_expectation_test.yml:12:5)\n",
		"        - {rule: captured_payment_has_ledger_entry, key: p1, state: open}\n",
		"        + {rule: captured_payment_has_ledger_entry, key: p1, state: resolved}\n",
		"dead letters: expected 0, got 1\n",
		"FAIL: 1 passed, 1 failed, 1 files\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -update rewrites it)\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestParseErrorsAreLocated(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      []string
	}{
		{"unknown top-level field", "rule_files: [r.yaml]\nrulefiles: [x]\ntests: []\n",
			[]string{`t.yml:2:1: unknown field "rulefiles" (known: rule_files, start, evaluation_interval, tests)`, `t.yml:3:8: tests: the file has no test`}},
		{"unknown field in input", "rule_files: [r.yaml]\ntests:\n  - name: a\n    input:\n      - {topic: payments, vaule: {}}\n    eval: [{at: 1s}]\n",
			[]string{`t.yml:5:27: unknown field "vaule"`, `t.yml:5:9: input: value (a mapping, sent as JSON) or raw (a string, sent as is) is required`}},
		{"bad duration and state", "rule_files: [r.yaml]\ntests:\n  - name: a\n    eval:\n      - at: 40\n        violations: [{rule: r, key: k, state: firing}]\n",
			[]string{`t.yml:5:13: at: bad duration "40"`, `t.yml:6:47: state: "firing" is not a violation state`}},
		{"records out of order and after the last eval", "rule_files: [r.yaml]\ntests:\n  - name: a\n    input:\n      - {topic: x, at: 5s, raw: '{}'}\n      - {topic: x, at: 1s, raw: '{}'}\n      - {topic: x, at: 9s, raw: '{}'}\n    eval: [{at: 6s}]\n",
			[]string{`t.yml:6:9: input: at 1s is before the previous record's 5s`, `t.yml:7:9: input: at 9s is after the last evaluation (6s)`}},
		{"missing eval and duplicate name", "rule_files: [r.yaml]\ntests:\n  - name: a\n    eval: [{at: 1s}]\n  - name: a\n",
			[]string{`t.yml:5:5: test "a": eval is required`, `t.yml:5:5: test "a": duplicate test name, first at t.yml:3:5`}},
		{"bad substitution", "rule_files: [r.yaml]\ntests:\n  - name: a\n    input:\n      - {topic: x, value: {occurred_at: '${now+1s}'}}\n    eval: [{at: 1s}]\n",
			[]string{`t.yml:5:41: ${now+1s}: want t, t+D or t-D`}},
		{"value and raw", "rule_files: [r.yaml]\ntests:\n  - name: a\n    input:\n      - {topic: x, value: {a: 1}, raw: '{}'}\n    eval: [{at: 1s}]\n",
			[]string{`t.yml:5:40: input: give either value or raw, not both`}},
		{"yaml syntax", "rule_files: [r.yaml\n", []string{`t.yml:1:1: did not find expected ',' or ']'`}},
		{"not a mapping", "- a\n", []string{`t.yml:1:1: expected a mapping, got a list`}},
		{"missing required", "start: yesterday\n", []string{
			`t.yml:1:8: start: "yesterday" is not an RFC 3339 time`, `t.yml:1:1: rule_files is required`, `t.yml:1:1: tests is required`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.yml", []byte(tc.src))
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("got %v, want Errors", err)
			}
			for _, e := range errs {
				if e.Pos.Line < 1 || e.Pos.Column < 1 {
					t.Errorf("unlocated error: %v", e)
				}
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("errors lack %q:\n%v", w, err)
				}
			}
			if len(errs) != len(tc.want) {
				t.Errorf("got %d errors, want %d:\n%v", len(errs), len(tc.want), err)
			}
		})
	}
}

func TestValuesAreEncodedAsWritten(t *testing.T) {
	src := `
rule_files: [r.yaml]
start: 2026-03-01T12:00:00Z
tests:
  - name: a
    input:
      - topic: x
        value: &base
          s: '${t+1m30s}'
          before: '${t-2s}'
          lit: $${t} costs $$5
          i: 2500
          f: 25.0
          g: .5
          big: 1e3
          b: true
          n: null
          list: [1, "two", {three: 3}]
          nested: {at: '${t}'}
      - topic: x
        at: 2s
        timestamp: 1s
        key: acct-1
        value: {<<: *base, i: 7, extra: x}
    eval: [{at: 2s}]
`
	f, err := Parse("t.yml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	in := f.Tests[0].Input
	want := `{"s":"2026-03-01T12:01:30Z","before":"2026-03-01T11:59:58Z","lit":"${t} costs $$5","i":2500,"f":25.0,"g":0.5,"big":1e3,"b":true,"n":null,"list":[1,"two",{"three":3}],"nested":{"at":"2026-03-01T12:00:00Z"}}`
	if got := string(in[0].Value); got != want {
		t.Errorf("value:\ngot  %s\nwant %s", got, want)
	}
	want = `{"s":"2026-03-01T12:01:30Z","before":"2026-03-01T11:59:58Z","lit":"${t} costs $$5","f":25.0,"g":0.5,"big":1e3,"b":true,"n":null,"list":[1,"two",{"three":3}],"nested":{"at":"2026-03-01T12:00:00Z"},"i":7,"extra":"x"}`
	if got := string(in[1].Value); got != want {
		t.Errorf("merged value:\ngot  %s\nwant %s", got, want)
	}
	if in[1].At.String() != "2s" || in[1].Timestamp.String() != "1s" || string(in[1].Key) != "acct-1" {
		t.Errorf("record: %+v", in[1])
	}
	if in[0].At != 0 || in[0].Timestamp != 0 {
		t.Errorf("first record defaults: %+v", in[0])
	}
}

// TestRunRejectsWhatNoRuleReads: a misspelt topic or rule would otherwise
// let a near-miss test pass without testing anything.
func TestRunRejectsWhatNoRuleReads(t *testing.T) {
	src := `
rule_files: [../../rules/captured_payment_has_ledger_entry.yaml]
tests:
  - name: typo
    input:
      - {topic: paymnts, raw: '{}'}
    eval:
      - at: 1m
        violations: [{rule: captured_payment_has_ledger, key: p1, state: open}]
`
	f, err := Parse("x_test.yml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Run()
	for _, want := range []string{
		`x_test.yml:6:9: input: no stream of the rule files reads topic "paymnts" (topics: ledger, payments)`,
		`x_test.yml:9:22: violation: the rule files have no rule "captured_payment_has_ledger" (rules: captured_payment_has_ledger_entry)`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want %q", err, want)
		}
	}
}

func TestRuleFileErrorsAreReported(t *testing.T) {
	f, err := Parse("testdata/x_test.yml", []byte("rule_files: [missing.yaml]\ntests: [{name: a, eval: [{at: 1s}]}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Run(); err == nil || !strings.Contains(err.Error(), "testdata/x_test.yml:1:13: rule_files: read rule file") {
		t.Fatalf("got %v", err)
	}
}

// TestDurationsAreWrittenAsInRuleFiles: a rule says `within: 1d`, so its
// test can put a record a day later with the same spelling.
func TestDurationsAreWrittenAsInRuleFiles(t *testing.T) {
	src := "rule_files: [r.yaml]\nstart: 2026-03-01T00:00:00Z\nevaluation_interval: 1h\ntests:\n  - name: a\n    input:\n      - {topic: x, at: 1d, raw: '${t+1d12h}'}\n    eval: [{at: 1w}]\n"
	f, err := Parse("t.yml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	in, ev := f.Tests[0].Input[0], f.Tests[0].Eval[0]
	if in.At != 24*time.Hour || ev.At != 7*24*time.Hour || f.EvaluationInterval != time.Hour || string(in.Value) != "2026-03-02T12:00:00Z" {
		t.Fatalf("at %s, eval at %s, interval %s, value %s", in.At, ev.At, f.EvaluationInterval, in.Value)
	}
}
