package rules

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/ext"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// exprCheck is one compiled event expression with what is needed to compile
// it again under typed variables: where it was written, what it must
// produce, and which streams its `event` and lookups read.
type exprCheck struct {
	file    string
	lines   []string
	src     Scalar
	ctx     errCtx
	what    string
	want    []*cel.Type
	stream  *Stream
	lookups map[string]*Stream
}

// EventType is the type of a stream's events as its registered schema
// declares it, as a protobuf message descriptor: CEL type-checks field
// selections and operators against it. internal/schema translates Avro and
// Protobuf schemas into such a message, with the types CEL sees at run time
// (timestamps as google.protobuf.Timestamp, enums as strings).
type EventType struct {
	// Message is the record's type.
	Message protoreflect.MessageDescriptor
	// Source says where the type came from, for error messages, such as
	// `subject "payments-value" version 3`.
	Source string
}

// SchemaStreams returns the streams whose format has a Schema Registry
// schema (avro, protobuf, json_schema), sorted by name.
func (rs *RuleSet) SchemaStreams() []*Stream {
	var out []*Stream
	for _, s := range rs.Streams {
		if s.Format != FormatJSON {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// TypeCheck compiles every event expression again with `event` (and each
// lookup) typed by its stream's schema, and returns every expression that
// no longer type-checks: a misspelt or removed field, a comparison of a
// number with a string. Each error points at the expression in its rule
// file. Streams missing from types keep their untyped `event` and are not
// checked. It returns nil when everything checks.
func (rs *RuleSet) TypeCheck(types map[string]EventType) Errors {
	var errs Errors
	envs := map[string]*cel.Env{}
	for _, chk := range rs.checks {
		vars := map[string]*Stream{"event": chk.stream}
		for n, s := range chk.lookups {
			vars[n] = s
		}
		typed := false
		for _, s := range vars {
			if _, ok := types[s.Name]; ok {
				typed = true
			}
		}
		if !typed {
			continue
		}
		envKey := envKeyOf(vars)
		env, ok := envs[envKey]
		if !ok {
			var err error
			if env, err = typedEnv(vars, types); err != nil {
				errs = append(errs, chk.ctx.at(Pos{File: chk.file, Line: chk.src.Line, Column: chk.src.Column}, fmt.Sprintf("%s: typed environment: %v", chk.what, err)))
				continue
			}
			envs[envKey] = env
		}
		var sources []string
		for _, n := range slices.Sorted(maps.Keys(vars)) {
			if t, ok := types[vars[n].Name]; ok {
				sources = append(sources, fmt.Sprintf("%s: %s", n, t.Source))
			}
		}
		c := &compiler{file: chk.file, lines: chk.lines, events: env, errs: &errs}
		before := len(errs)
		c.compile(env, chk.src, chk.ctx, chk.what, chk.want...)
		for _, e := range errs[before:] {
			e.Message += " (checked against " + strings.Join(sources, ", ") + ")"
		}
	}
	return errs
}

// RulesReading returns the names of the rules that read stream, sorted:
// directly, through a lookup, or because a rule's input's expressions do.
func (rs *RuleSet) RulesReading(stream string) []string {
	var out []string
	for _, r := range rs.Rules {
		for _, s := range r.Streams() {
			if s.Name == stream {
				out = append(out, r.Name)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

// BrokenRules returns the names of the rules that errors from TypeCheck
// break, sorted: the rule an error names, or every rule reading the stream
// whose id, key or time expression no longer checks.
func (rs *RuleSet) BrokenRules(errs Errors) []string {
	set := map[string]bool{}
	for _, e := range errs {
		switch {
		case e.Rule != "":
			set[e.Rule] = true
		case e.Stream != "":
			for _, r := range rs.RulesReading(e.Stream) {
				set[r] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(set))
}

func typedEnv(vars map[string]*Stream, types map[string]EventType) (*cel.Env, error) {
	opts := []cel.EnvOption{
		cel.Variable("record", cel.MapType(cel.StringType, cel.DynType)),
		cel.CrossTypeNumericComparisons(true),
		cel.OptionalTypes(),
	}
	seen := map[string]bool{}
	for _, n := range slices.Sorted(maps.Keys(vars)) {
		t, ok := types[vars[n].Name]
		if !ok {
			opts = append(opts, cel.Variable(n, cel.MapType(cel.StringType, cel.DynType)))
			continue
		}
		if f := t.Message.ParentFile(); !seen[f.Path()] {
			seen[f.Path()] = true
			opts = append(opts, cel.TypeDescs(f))
		}
		opts = append(opts, cel.Variable(n, cel.ObjectType(string(t.Message.FullName()))))
	}
	return cel.NewEnv(append(opts, ext.Strings())...)
}

func envKeyOf(vars map[string]*Stream) string {
	var b strings.Builder
	for _, n := range slices.Sorted(maps.Keys(vars)) {
		b.WriteString(n + "=" + vars[n].Name + ";")
	}
	return b.String()
}

// BindFormats gives the rule set the decoders of the formats its streams
// declare beyond JSON, by format name. It must be called before the rule
// set is used when any stream's format is not json; a format with no
// decoder is an error naming the stream.
func (rs *RuleSet) BindFormats(decoders map[string]ValueFormat) error {
	formats := map[string]ValueFormat{}
	for _, s := range rs.SchemaStreams() {
		d := decoders[s.Format]
		if d == nil {
			return fmt.Errorf("stream %q: format %s needs a schema registry (schema_registry.urls)", s.Name, s.Format)
		}
		formats[s.Topic] = d
	}
	rs.formats = formats
	return nil
}
