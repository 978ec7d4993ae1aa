package strictyaml

import (
	"fmt"
	"reflect"
	"slices"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestMappingReportsEveryProblemAtItsNode(t *testing.T) {
	var root yaml.Node
	src := "base: &b {a: 1}\nx: *b\nzz: 2\nx: 3\n"
	if err := yaml.Unmarshal([]byte(src), &root); err != nil {
		t.Fatal(err)
	}
	var got []string
	report := func(at *yaml.Node, msg string) { got = append(got, fmt.Sprintf("%d:%d: %s", at.Line, at.Column, msg)) }
	fields := Mapping(root.Content[0], []string{"x", "base"}, report)
	want := []string{`3:1: unknown field "zz" (known: x, base)`, `4:1: field "x" given twice`}
	if !slices.Equal(got, want) {
		t.Errorf("reports = %q, want %q", got, want)
	}
	if x := fields["x"]; x == nil || x.Kind != yaml.MappingNode {
		t.Errorf("x = %v, want the aliased mapping", x)
	}
	got = nil
	if List(fields["x"], "x", report) != nil || len(got) != 1 || got[0] != `1:7: x: expected a list, got a mapping` {
		t.Errorf("List of a mapping reported %q", got)
	}
	got = nil
	if _, ok := Duration(fields["base"].Content[1], "a", report); ok || len(got) != 1 {
		t.Errorf("Duration of \"1\" reported %q", got)
	}
	if d, err := ParseDuration("1d1h"); err != nil || d.Hours() != 25 {
		t.Errorf("ParseDuration(1d1h) = %v, %v", d, err)
	}
}

func TestFieldTypesFollowYAMLTags(t *testing.T) {
	type spec struct {
		Name  string `yaml:"name"`
		Inner *spec  `yaml:"inner,omitempty"`
		skip  int
		Gone  int `yaml:"-"`
	}
	got := FieldTypes(reflect.TypeOf(&spec{}))
	if len(got) != 2 || got["name"].Kind() != reflect.String || got["inner"].Kind() != reflect.Pointer {
		t.Errorf("FieldTypes = %v", got)
	}
	_ = spec{}.skip
}
