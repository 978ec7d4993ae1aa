package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ruleFile is a valid single-rule file with one part replaced by the test.
func ruleFile(labels, annotations, condition string) string {
	return `streams:
  payments:
    topic: payments
    id: event.event_id
    key: event.payment_id
    time: timestamp(event.occurred_at)
  ledger:
    topic: ledger
    id: event.entry_id
    key: event.payment_id
    time: timestamp(event.occurred_at)
rules:
  - name: r
    kind: absence
    when:
      stream: payments
      if: ` + condition + `
    expect:
      stream: ledger
    within: 30s
    labels:
` + labels + `
    annotations:
` + annotations + `
`
}

const (
	okLabels      = "      team: payments"
	okAnnotations = "      summary: Captured payments without a ledger entry"
	okCondition   = `event.status == "captured"`
)

// aliasBomb nests aliases levels deep as label values, each level referring
// to the one below nine times: 9^levels nodes once expanded, in a few KB.
func aliasBomb(levels int) string {
	var b strings.Builder
	b.WriteString("      l0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n")
	for i := 1; i <= levels; i++ {
		fmt.Fprintf(&b, "      l%d: &a%d [", i, i)
		for j := range 9 {
			if j > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, "*a%d", i-1)
		}
		b.WriteString("]\n")
	}
	return b.String()
}

// TestHostileRuleFilesRejectedQuickly runs `monitor rules check` as a process
// on each hostile rule file: each must be rejected (exit 1) with a
// file:line:col error that says what is wrong, within 2 s and 100 MiB of
// peak memory, since the same loader runs on SIGHUP inside the monitor.
func TestHostileRuleFilesRejectedQuickly(t *testing.T) {
	cases := []struct {
		name, body, want string
	}{
		{"alias_bomb.yaml", ruleFile(aliasBomb(12), okAnnotations, okCondition), "expands to more than 100000 YAML nodes"},
		{"alias_bomb_small.yaml", ruleFile(aliasBomb(6), okAnnotations, okCondition), "expands to more than 100000 YAML nodes"},
		{"huge.yaml", ruleFile(okLabels, okAnnotations, okCondition) + strings.Repeat("# padding padding padding padding padding padding padding\n", 40000), "larger than 1048576 bytes"},
		{"deep_nesting.yaml", "x: " + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + "\n" + ruleFile(okLabels, okAnnotations, okCondition), ""},
		{"regex_states.yaml", ruleFile(okLabels, okAnnotations, `event.note.matches("\\w{999}!")`), "exceeds the budget"},
		{"regex_from_data.yaml", ruleFile(okLabels, okAnnotations, `event.note.matches(event.pattern)`), "needs a constant pattern"},
		{"regex_invalid_repeat.yaml", ruleFile(okLabels, okAnnotations, `event.note.matches("(x{1000}){1000}")`), "invalid repeat count"},
		{"nested_comprehension.yaml", ruleFile(okLabels, okAnnotations, `event.items.exists(i, event.items.exists(j, event.items.exists(k, i == j && j == k)))`), "exceeds the budget"},
		{"template_unclosed.yaml", ruleFile(okLabels, `      summary: "{{ .Count"`, okCondition), `annotation "summary"`},
		{"template_unknown_field.yaml", ruleFile(okLabels, `      summary: "{{ .Nope }}"`, okCondition), `no field "Nope"`},
		{"template_range_int.yaml", ruleFile(okLabels, `      summary: "{{ range 1000000000 }}x{{ end }}"`, okCondition), "range may only iterate over .Top"},
		{"template_printf_width.yaml", ruleFile(okLabels, `      summary: '{{ printf "%0999999999d" .Count }}'`, okCondition), "limited to three digits"},
		{"template_too_long.yaml", ruleFile(okLabels, "      summary: "+strings.Repeat("x", 5000), okCondition), "more than the 4096"},
		{"label_list.yaml", ruleFile("      team: [payments, billing]", okAnnotations, okCondition), `label "team": value must be a string`},
		{"label_map.yaml", ruleFile("      team: {name: payments}", okAnnotations, okCondition), `label "team": value must be a string`},
		{"annotation_map.yaml", ruleFile(okLabels, "      summary: {text: hi}", okCondition), `annotation "summary": value must be a string`},
	}
	dir := t.TempDir()
	located := regexp.MustCompile(`(?m)^[^\s:]+\.yaml:\d+:\d+: `)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, c.name)
			if err := os.WriteFile(path, []byte(c.body), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(os.Args[0], "rules", "check", path)
			cmd.Env = append(os.Environ(), "INVMON_TEST_MAIN=1")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			began := time.Now()
			err := cmd.Run()
			took := time.Since(began)
			if err == nil {
				t.Fatalf("accepted (%s)", stdout.String())
			}
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
				t.Fatalf("exit: %v; stderr %s", err, stderr.String())
			}
			rss := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10 // KiB on Linux
			t.Logf("rejected in %s, peak RSS %.1f MiB: %s", took.Round(time.Millisecond), float64(rss)/(1<<20), firstLine(stderr.String()))
			if !located.MatchString(stderr.String()) {
				t.Errorf("no file:line:col error: %s", stderr.String())
			}
			if !strings.Contains(stderr.String(), c.want) {
				t.Errorf("stderr does not say %q: %s", c.want, stderr.String())
			}
			if took > 2*time.Second || rss > 100<<20 {
				t.Errorf("took %s and %d MiB; the limit is 2 s and 100 MiB", took, rss>>20)
			}
		})
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
