package alert

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/violation"
)

// TestAnnotationFieldsMatchAggregate keeps the fields `rules check` lets an
// annotation template read equal to those Aggregate offers when it runs.
func TestAnnotationFieldsMatchAggregate(t *testing.T) {
	var got []string
	at := reflect.TypeOf(Aggregate{})
	for i := range at.NumField() {
		if f := at.Field(i); f.IsExported() {
			got = append(got, f.Name)
		}
	}
	want := slices.Clone(rules.AnnotationFields)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("Aggregate fields %v, rules.AnnotationFields %v", got, want)
	}
}

// TestAnnotationOutputIsBounded: a template whose output would grow without
// bound stops at rules.MaxAnnotationOutput and the raw text is used.
func TestAnnotationOutputIsBounded(t *testing.T) {
	cr, err := compileRule(RuleSpec{Name: "r", Annotations: map[string]string{"summary": "{{ range .Top }}" + strings.Repeat("x", 4000) + "{{ end }}{{ range .Top }}" + strings.Repeat("y", 4000) + "{{ end }}"}})
	if err != nil {
		t.Fatal(err)
	}
	agg := Aggregate{Top: make([]violation.Violation, 5)}
	ann, errs := cr.expandAnnotations(agg)
	if len(errs) != 1 || len(ann["summary"]) > rules.MaxAnnotationOutput {
		t.Fatalf("errors %v, summary of %d bytes", errs, len(ann["summary"]))
	}
}
