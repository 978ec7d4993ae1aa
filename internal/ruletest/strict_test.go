package ruletest

import (
	"regexp"
	"testing"

	"github.com/invmon/invmon/internal/rules"
)

// A rule file and a rule test file are read by one strict YAML layer
// (package strictyaml): the same mistake in either gives the same kind of
// message, located at the same kind of place.
func TestSameMistakeSameMessageInRuleAndTestFiles(t *testing.T) {
	const stream = "streams:\n  payments:\n    topic: payments\n    id: event.id\n    key: event.k\n    time: timestamp(event.t)\n"
	const rule = "rules:\n  - name: r\n    kind: unique\n    on: {stream: payments}\n    window: 1h\n"
	for _, tc := range []struct {
		name             string
		ruleSrc, testSrc string
		// want matches the message after "file:line:col: " and the rule or
		// stream it belongs to, in both files.
		want string
	}{
		{"unknown field",
			stream + "    tpoic: x\n" + rule,
			"rule_files: [r.yaml]\ntests:\n  - name: a\n    input: [{tpoic: x}]\n    eval: [{at: 1s}]\n",
			`^unknown field "tpoic" \(known: [a-z_, ]+\)$`},
		{"field given twice",
			stream + "    topic: again\n" + rule,
			"rule_files: [r.yaml]\nrule_files: [s.yaml]\ntests: [{name: a, eval: [{at: 1s}]}]\n",
			`^field "(topic|rule_files)" given twice$`},
		{"bad duration",
			stream + "rules:\n  - name: r\n    kind: unique\n    on: {stream: payments}\n    window: soon\n",
			"rule_files: [r.yaml]\ntests: [{name: a, eval: [{at: soon}]}]\n",
			`^(window|at): bad duration "soon" \(use a number and a unit: ms, s, m, h, d, w\)$`},
		{"a mapping where a list belongs",
			"streams: {}\nrules: {name: r}\n",
			"rule_files: [r.yaml]\ntests: {name: a}\n",
			`^(tests: )?expected a list, got a mapping$`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := regexp.MustCompile(tc.want)
			_, ruleErr := rules.Parse([]string{"r.yaml"}, map[string][]byte{"r.yaml": []byte(tc.ruleSrc)})
			_, testErr := Parse("t.yml", []byte(tc.testSrc))
			for file, err := range map[string]error{"rule file": ruleErr, "test file": testErr} {
				errs := rules.AsErrors(err)
				if len(errs) == 0 {
					t.Fatalf("%s: got %v, want located errors", file, err)
				}
				found := false
				for _, e := range errs {
					if want.MatchString(e.Message) && e.Pos.Line > 0 && e.Pos.Column > 0 {
						found = true
					}
				}
				if !found {
					t.Errorf("%s: no located error matches %s:\n%v", file, tc.want, err)
				}
			}
		})
	}
}
