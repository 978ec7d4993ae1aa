// Package strictyaml is the one strict reading of the monitor's hand-written
// YAML files, rule files (package rules) and rule test files (package
// ruletest): every mapping key must be known, each key given once, every
// value of the shape its field wants, and every duration in one syntax.
//
// It walks yaml.v3 nodes rather than decoding with KnownFields, which stops
// at the first unknown field and reports no column: each problem goes to a
// Report at the node it is about, and the walk goes on, so that an author
// fixes a file in one pass. The caller turns a report into its own located
// error (`file:line:col: message`) with whatever context it has (the rule
// or stream a problem belongs to); both callers word the same mistake with
// the same message.
package strictyaml

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"
)

// Report receives one problem, at the node it is about.
type Report func(at *yaml.Node, msg string)

// Kind names what a node is, for messages: "a mapping", "a list", the
// quoted scalar, or "nothing".
func Kind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	default:
		return "nothing"
	}
}

// Deref follows aliases to the node they name.
func Deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// Mapping returns the values of the mapping n by key, aliases followed.
// It reports n when it is not a mapping (and returns nil), every key not in
// known as `unknown field "k" (known: ...)` listing known in the order
// given, and every key given again as `field "k" given twice`; neither kind
// of key is in the result.
func Mapping(n *yaml.Node, known []string, report Report) map[string]*yaml.Node {
	n = Deref(n)
	if n.Kind != yaml.MappingNode {
		report(n, "expected a mapping, got "+Kind(n))
		return nil
	}
	out := make(map[string]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !slices.Contains(known, k.Value) {
			report(k, fmt.Sprintf("unknown field %q (known: %s)", k.Value, strings.Join(known, ", ")))
			continue
		}
		if _, dup := out[k.Value]; dup {
			report(k, fmt.Sprintf("field %q given twice", k.Value))
			continue
		}
		out[k.Value] = Deref(v)
	}
	return out
}

// List returns the items of the list n, aliases followed, or reports n and
// returns nil when it is not a list. what names the field in the message;
// "" leaves it out.
func List(n *yaml.Node, what string, report Report) []*yaml.Node {
	n = Deref(n)
	if n.Kind != yaml.SequenceNode {
		report(n, prefix(what)+"expected a list, got "+Kind(n))
		return nil
	}
	out := make([]*yaml.Node, 0, len(n.Content))
	for _, c := range n.Content {
		out = append(out, Deref(c))
	}
	return out
}

// Scalar returns the value of the scalar n, or reports n when it is a
// mapping or a list.
func Scalar(n *yaml.Node, what string, report Report) (string, bool) {
	n = Deref(n)
	if n.Kind != yaml.ScalarNode {
		report(n, prefix(what)+"expected a single value, got "+Kind(n))
		return "", false
	}
	return n.Value, true
}

// Duration reads the scalar n with ParseDuration, or reports it.
func Duration(n *yaml.Node, what string, report Report) (time.Duration, bool) {
	s, ok := Scalar(n, what, report)
	if !ok {
		return 0, false
	}
	d, err := ParseDuration(s)
	if err != nil {
		report(n, BadDuration(what, s))
		return 0, false
	}
	return d, true
}

// BadDuration is the message for a value that ParseDuration refuses.
func BadDuration(what, value string) string {
	return fmt.Sprintf("%sbad duration %q (use a number and a unit: ms, s, m, h, d, w)", prefix(what), value)
}

// ParseDuration reads a duration as every file and flag of the monitor
// writes it: Prometheus's syntax, a number and a unit from ms, s, m, h, d, w
// and y, units combined largest first (1d, 1h30m, 250ms; 0 without a
// unit). Rule files, rule test files and time flags share it so that a
// duration valid in one is valid in all.
func ParseDuration(s string) (time.Duration, error) {
	d, err := model.ParseDuration(s)
	return time.Duration(d), err
}

// FieldTypes returns the fields of struct type t (a pointer is followed)
// by their YAML names: the known keys of the mapping t decodes, and what
// each value decodes into.
func FieldTypes(t reflect.Type) map[string]reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name != "" && name != "-" {
			out[name] = f.Type
		}
	}
	return out
}

func prefix(what string) string {
	if what == "" {
		return ""
	}
	return what + ": "
}
