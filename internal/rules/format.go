package rules

import (
	"maps"
	"reflect"
	"slices"

	"github.com/invmon/invmon/internal/strictyaml"
	"gopkg.in/yaml.v3"
)

// Scalar is a YAML scalar that remembers where it was written, so that every
// validation and CEL error can point at the file's line and column.
type Scalar struct {
	Value  string
	Line   int
	Column int
	Style  yaml.Style
	// Set is true when the field was present in the file.
	Set bool
	// notScalar is set when the node was a map or a list; validation reports it.
	notScalar bool
}

// UnmarshalYAML records the scalar and its position. A non-scalar node is not
// a decode error here: it is reported by validation with its position, so that
// one bad field does not hide the rest of the file's problems.
func (s *Scalar) UnmarshalYAML(n *yaml.Node) error {
	s.Line, s.Column, s.Style, s.Set = n.Line, n.Column, n.Style, true
	if n.Kind != yaml.ScalarNode {
		s.notScalar = true
		return nil
	}
	s.Value = n.Value
	return nil
}

type fileSpec struct {
	Streams map[string]*streamSpec `yaml:"streams"`
	Rules   []*ruleSpec            `yaml:"rules"`
}

type streamSpec struct {
	Topic           Scalar `yaml:"topic"`
	Format          Scalar `yaml:"format"`
	Subject         Scalar `yaml:"subject"`
	ID              Scalar `yaml:"id"`
	Key             Scalar `yaml:"key"`
	Time            Scalar `yaml:"time"`
	AllowedLateness Scalar `yaml:"allowed_lateness"`
	IdleAfter       Scalar `yaml:"idle_after"`
	MaxLag          Scalar `yaml:"max_lag"`
	MaxHold         Scalar `yaml:"max_hold"`

	raw *yaml.Node // positions, and the canonical form that compares declarations
}

func (s *streamSpec) UnmarshalYAML(n *yaml.Node) error {
	type plain streamSpec
	s.raw = n
	return n.Decode((*plain)(s))
}

type sideSpec struct {
	Stream    Scalar `yaml:"stream"`
	Condition Scalar `yaml:"if"`
	Key       Scalar `yaml:"key"`
}

// lookupSpec makes the latest event of another entity visible to a rule's
// expressions: the entity of `stream` whose key is `key` (evaluated on the
// rule's event).
type lookupSpec struct {
	Stream Scalar `yaml:"stream"`
	Key    Scalar `yaml:"key"`
}

type impactSpec struct {
	Value    Scalar `yaml:"value"`
	Customer Scalar `yaml:"customer"`
	Unit     Scalar `yaml:"unit"`
}

type severitySpec struct {
	Name Scalar `yaml:"name"`
	When Scalar `yaml:"when"`
}

type ruleSpec struct {
	Name        Scalar    `yaml:"name"`
	Kind        Scalar    `yaml:"kind"`
	Description Scalar    `yaml:"description"`
	When        *sideSpec `yaml:"when"`
	Expect      *sideSpec `yaml:"expect"`
	Within      Scalar    `yaml:"within"`
	Lookback    Scalar    `yaml:"lookback"`
	// RedeliveryWindow keeps expect events this much longer, so a trigger
	// read late still finds its match (absence). Default: the larger of 15m
	// and ten times within.
	RedeliveryWindow Scalar                 `yaml:"redelivery_window"`
	Lookup           map[string]*lookupSpec `yaml:"lookup"`
	// On is the input of unique, transition and state rules.
	On *sideSpec `yaml:"on"`
	// Window bounds how far apart two events with one key count as
	// duplicates (unique).
	Window Scalar `yaml:"window"`
	// State, Version, Initial and Allowed describe a state machine
	// (transition).
	State   Scalar              `yaml:"state"`
	Version Scalar              `yaml:"version"`
	Initial []Scalar            `yaml:"initial"`
	Allowed map[string][]Scalar `yaml:"allowed"`
	// Condition, Until and For describe a condition that must not persist
	// (state).
	Condition Scalar `yaml:"condition"`
	Until     Scalar `yaml:"until"`
	For       Scalar `yaml:"for"`
	// Retention bounds how long per-entity state is kept after its last event
	// (transition and state).
	Retention Scalar `yaml:"retention"`
	// Objective is the share of the rule's checks that must pass over
	// SLOWindow: its consistency SLO (any kind).
	Objective   Scalar            `yaml:"objective"`
	SLOWindow   Scalar            `yaml:"slo_window"`
	Labels      map[string]Scalar `yaml:"labels"`
	Annotations map[string]Scalar `yaml:"annotations"`
	Impact      *impactSpec       `yaml:"impact"`
	Severity    []*severitySpec   `yaml:"severity"`

	raw *yaml.Node // positions, the source shown, and the version's canonical form
}

func (r *ruleSpec) UnmarshalYAML(n *yaml.Node) error {
	type plain ruleSpec
	r.raw = n
	return n.Decode((*plain)(r))
}

var scalarType = reflect.TypeOf(Scalar{})

// checkFields walks a YAML node beside the Go type it decodes into, with
// package strictyaml's checks: every mapping key the type does not have,
// every key given twice, and every mapping or list where the type wants the
// other, each reported at its node with the rule or stream it belongs to.
func checkFields(n *yaml.Node, t reflect.Type, loc func(n *yaml.Node) Pos, ctx errCtx, errs *Errors) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	n = strictyaml.Deref(n)
	report := func(at *yaml.Node, msg string) { *errs = append(*errs, ctx.at(loc(at), msg)) }
	switch {
	case t == scalarType:
		return
	case t.Kind() == reflect.Struct:
		types := strictyaml.FieldTypes(t)
		fields := strictyaml.Mapping(n, slices.Sorted(maps.Keys(types)), report)
		if fields == nil {
			return
		}
		if ctx.inRule && ctx.rule == "" {
			if name := fields["name"]; name != nil {
				ctx.rule = name.Value
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 { // in file order
			k, v := n.Content[i], n.Content[i+1]
			if fields[k.Value] != strictyaml.Deref(v) {
				continue // unknown or given twice: reported
			}
			checkFields(v, types[k.Value], loc, ctx, errs)
		}
	case t.Kind() == reflect.Slice:
		for _, c := range strictyaml.List(n, "", report) {
			cctx := ctx
			if t.Elem() == reflect.TypeOf(&ruleSpec{}) {
				cctx = errCtx{inRule: true, rule: scalarField(c, "name")}
			}
			checkFields(c, t.Elem(), loc, cctx, errs)
		}
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			report(n, "expected a mapping, got "+strictyaml.Kind(n))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			cctx := ctx
			if t.Elem() == reflect.TypeOf(&streamSpec{}) {
				cctx = errCtx{stream: n.Content[i].Value}
			}
			checkFields(n.Content[i+1], t.Elem(), loc, cctx, errs)
		}
	}
}

// errCtx says which rule or stream an error belongs to.
type errCtx struct {
	inRule bool
	rule   string
	stream string
}

func (c errCtx) at(p Pos, msg string) *Error {
	return &Error{Pos: p, Rule: c.rule, Stream: c.stream, Message: msg}
}

func scalarField(n *yaml.Node, key string) string {
	if n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key && n.Content[i+1].Kind == yaml.ScalarNode {
			return n.Content[i+1].Value
		}
	}
	return ""
}

func reflectTypeOf[T any]() reflect.Type { return reflect.TypeOf((*T)(nil)).Elem() }
