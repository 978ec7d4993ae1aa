package rules_test

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/rules"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/*.bad.yaml.err from the current messages")

// companions returns the files named on a leading "# with: a.yaml b.yaml"
// line: a case about two files (a rule name or a stream declared in both)
// loads them first, from the same directory.
func companions(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, "# with:")
		if !ok {
			break
		}
		for _, name := range strings.Fields(rest) {
			out = append(out, filepath.Join(filepath.Dir(path), name))
		}
	}
	return out
}

func TestGoodFilesLoad(t *testing.T) {
	files, err := filepath.Glob("testdata/*.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../../rules/*.yaml")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			var with []string
			if !strings.Contains(f, "*") {
				with = companions(t, f)
			}
			rs, err := rules.LoadFiles(append(with, f)...)
			if err != nil {
				t.Fatalf("want no error, got:\n%v", err)
			}
			if len(rs.Rules) == 0 {
				t.Fatal("no rules loaded")
			}
		})
	}
	// Files that declare the same streams alike load together.
	if _, err := rules.LoadFiles("testdata/base.good.yaml", "testdata/same_streams.good.yaml"); err != nil {
		t.Fatalf("streams declared alike in two files: %v", err)
	}
}

// locRE is the start of every message: file:line:col, then what is wrong.
var locRE = regexp.MustCompile(`^testdata/[a-z_.]+\.yaml:(\d+):(\d+): `)

// TestBadFiles loads each testdata/*.bad.yaml (after the files its "# with:"
// line names) and compares the messages with testdata/<name>.bad.yaml.err.
// Positions are also checked against the file itself: every error must
// point at a line of the file and a column within that line (or just past
// its end), so that an editor can jump to it.
func TestBadFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/*.bad.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 12 {
		t.Fatalf("only %d bad files", len(files))
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".bad.yaml")
		t.Run(name, func(t *testing.T) {
			problems := checkBadFile(t, f)
			for _, p := range problems {
				t.Error(p)
			}
		})
	}
}

// checkBadFile loads a bad case and returns what is wrong with its errors;
// with -update it rewrites the golden file instead of comparing.
func checkBadFile(t *testing.T, f string) []string {
	t.Helper()
	var problems []string
	report := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	_, err := rules.LoadFiles(append(companions(t, f), f)...)
	if err == nil {
		return []string{"loaded without error"}
	}
	errs := rules.AsErrors(err)
	if len(errs) == 0 {
		return []string{fmt.Sprintf("error is not located: %v", err)}
	}
	// The order of messages is not part of the contract (the loader reports
	// some in map order); their positions and texts are.
	sort.SliceStable(errs, func(i, j int) bool {
		a, b := errs[i].Pos, errs[j].Pos
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
	srcs := map[string][]string{}
	var got bytes.Buffer
	for _, e := range errs {
		fmt.Fprintln(&got, e.Error())
		if !locRE.MatchString(e.Error()) {
			report("message does not start with file:line:col: %q", e.Error())
		}
		lines, ok := srcs[e.Pos.File]
		if !ok {
			b, rerr := os.ReadFile(e.Pos.File)
			if rerr != nil {
				report("error names a file that cannot be read: %v", e)
				continue
			}
			lines = strings.Split(string(b), "\n")
			srcs[e.Pos.File] = lines
		}
		switch {
		case e.Pos.Line < 1 || e.Pos.Column < 1:
			report("position %s is not 1-based: %v", e.Pos, e)
		case e.Pos.Line > len(lines):
			report("line of %s is past the end of the file: %v", e.Pos, e)
		case e.Pos.Column > len(lines[e.Pos.Line-1])+1:
			report("column of %s is past the end of its line: %v", e.Pos, e)
		}
	}
	golden := f + ".err"
	if *updateGolden {
		if err := os.WriteFile(golden, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return problems
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		return append(problems, fmt.Sprintf("%v (go test -update writes it)", err))
	}
	if got.String() != string(want) {
		report("messages differ from %s (go test -update rewrites it)\ngot:\n%s\nwant:\n%s", golden, got.String(), want)
	}
	return problems
}

// TestErrorsUnwrap checks that callers can reach each located error, and the
// yaml or CEL cause behind it, with errors.As.
func TestErrorsUnwrap(t *testing.T) {
	_, err := rules.LoadFiles("testdata/many_errors.bad.yaml")
	var es rules.Errors
	if !errors.As(err, &es) || len(es) < 5 {
		t.Fatalf("want several errors, got %v", err)
	}
	var one *rules.Error
	if !errors.As(err, &one) || one.Pos.File != "testdata/many_errors.bad.yaml" {
		t.Fatalf("errors.As(*Error) = %v", one)
	}
}

func TestLoadFilesWithoutMatches(t *testing.T) {
	if _, err := rules.LoadFiles("testdata/nothing-*.yaml"); err == nil || !strings.Contains(err.Error(), "no rule files match") {
		t.Fatalf("got %v", err)
	}
	if _, err := rules.LoadFiles("testdata/missing.yaml"); err == nil || !strings.Contains(err.Error(), "testdata/missing.yaml") {
		t.Fatalf("got %v", err)
	}
}

// An absence rule without redelivery_window remembers expect events for the
// larger of 15 minutes and ten times within; one that sets it, even to 0,
// gets what it set.
func TestRedeliveryWindowDefaultsToFifteenMinutesOrTenWithins(t *testing.T) {
	const file = `
streams:
  a: {topic: a, id: event.id, key: event.k, time: timestamp(event.t)}
  b: {topic: b, id: event.id, key: event.k, time: timestamp(event.t)}
rules:
  - {name: short, kind: absence, when: {stream: a}, expect: {stream: b}, within: 30s}
  - {name: long, kind: absence, when: {stream: a}, expect: {stream: b}, within: 2h}
  - {name: set, kind: absence, when: {stream: a}, expect: {stream: b}, within: 30s, redelivery_window: 3m}
  - {name: none, kind: absence, when: {stream: a}, expect: {stream: b}, within: 30s, redelivery_window: 0s}
`
	path := filepath.Join(t.TempDir(), "r.yaml")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	rs, err := rules.LoadFiles(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]time.Duration{"short": 15 * time.Minute, "long": 20 * time.Hour, "set": 3 * time.Minute, "none": 0}
	for _, r := range rs.Rules {
		if got := r.Absence.RedeliveryWindow; got != want[r.Name] {
			t.Errorf("%s: redelivery window %s, want %s", r.Name, got, want[r.Name])
		}
	}
}
