package rules

import (
	"fmt"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/ext"
	"github.com/google/cel-go/interpreter"
)

// costLimit bounds the work one expression may do on one event, so that a rule
// such as a comprehension over a large array cannot stall a partition.
const costLimit = 100_000

// eventEnv is the CEL environment of stream and rule expressions: `event` is
// the record's JSON value, `record` its Kafka coordinates.
func eventEnv() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable("event", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("record", cel.MapType(cel.StringType, cel.DynType)),
		cel.CrossTypeNumericComparisons(true),
		cel.OptionalTypes(),
		ext.Strings(),
	)
}

// aggregateEnv is the CEL environment of severity tiers: the open violations
// of one rule, summarized.
func aggregateEnv() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable("count", cel.IntType),
		cel.Variable("customers", cel.IntType),
		cel.Variable("total", cel.DoubleType),
		cel.CrossTypeNumericComparisons(true),
	)
}

// ResolveName makes an Event its own CEL activation, so that evaluating an
// expression allocates no activation per event.
func (e *Event) ResolveName(name string) (any, bool) {
	switch name {
	case "event":
		return e.fields, true
	case "record":
		return types.DefaultTypeAdapter.NativeToValue(map[string]any{
			"topic":     e.Topic,
			"partition": int64(e.Partition),
			"offset":    e.Offset,
			"key":       string(e.Key),
			"timestamp": e.Timestamp,
		}), true
	}
	if e.Lookups != nil {
		return e.Lookups.Resolve(name, e)
	}
	return nil, false
}

// Parent implements interpreter.Activation; an Event has none.
func (e *Event) Parent() interpreter.Activation { return nil }

// program is a compiled CEL expression with its source for error messages.
type program struct {
	source string
	prg    cel.Program
}

func (p *program) eval(act interpreter.Activation) (ref.Val, error) {
	// Eval, not ContextEval: the cost limit already bounds an expression, and
	// wiring a context into every evaluation costs ~4% of the per-event path.
	out, _, err := p.prg.Eval(act)
	if err != nil {
		return nil, fmt.Errorf("evaluate %q: %w", p.source, err)
	}
	return out, nil
}

// StringExpr extracts a string from an event: an id, a key, a customer.
type StringExpr struct {
	// field is set when the expression is just `event.<field>`: it is then read
	// straight from the JSON, skipping CEL, because ids and keys are read for
	// every event and this is most of the per-event cost.
	field string
	prog  program
}

// Source returns the expression as written.
func (x *StringExpr) Source() string { return x.prog.source }

// Eval returns the expression's value for ev.
func (x *StringExpr) Eval(ev *Event) (string, error) {
	if x.field != "" {
		s, ok := ev.fields.TextField(x.field)
		if !ok {
			return "", fmt.Errorf("evaluate %q: field %q missing or not a string", x.prog.source, x.field)
		}
		return s, nil
	}
	out, err := x.prog.eval(ev)
	if err != nil {
		return "", err
	}
	switch v := out.(type) {
	case types.String:
		return string(v), nil
	case types.Int:
		return fmt.Sprint(int64(v)), nil
	}
	return "", fmt.Errorf("evaluate %q: got %s, want string", x.prog.source, out.Type().TypeName())
}

// EvalTransient is Eval for a caller that drops the result before ev's
// Decoder decodes the next record, or copies what it keeps: an id or key
// read straight from a JSON field then shares the parser's buffer instead
// of being copied (the most frequent allocation of the per-event path).
func (x *StringExpr) EvalTransient(ev *Event) (string, error) {
	if x.field != "" {
		if t, ok := ev.fields.(transientText); ok {
			s, ok := t.transientTextField(x.field)
			if !ok {
				return "", fmt.Errorf("evaluate %q: field %q missing or not a string", x.prog.source, x.field)
			}
			return s, nil
		}
	}
	return x.Eval(ev)
}

// TimeExpr extracts an event time.
type TimeExpr struct {
	// field is set for `timestamp(event.<field>)`, read without CEL.
	field string
	prog  program
}

// Source returns the expression as written.
func (x *TimeExpr) Source() string { return x.prog.source }

// Eval returns the event time of ev.
func (x *TimeExpr) Eval(ev *Event) (time.Time, error) {
	if x.field != "" {
		t, err := ev.fields.TimeField(x.field)
		if err != nil {
			return time.Time{}, fmt.Errorf("evaluate %q: %w", x.prog.source, err)
		}
		return t, nil
	}
	out, err := x.prog.eval(ev)
	if err != nil {
		return time.Time{}, err
	}
	if ts, ok := out.(types.Timestamp); ok {
		return ts.Time, nil
	}
	return time.Time{}, fmt.Errorf("evaluate %q: got %s, want timestamp", x.prog.source, out.Type().TypeName())
}

// BoolExpr is a condition over an event.
type BoolExpr struct {
	// field, literal and negate are set when the condition is just
	// `event.<field> == "<literal>"` (or !=): the usual filter, compared
	// straight on the JSON without running CEL, because it is evaluated for
	// every event.
	field   string
	literal string
	negate  bool
	prog    program
}

// Source returns the expression as written.
func (x *BoolExpr) Source() string { return x.prog.source }

// Eval reports whether the condition holds for ev. A nil BoolExpr holds always.
func (x *BoolExpr) Eval(ev *Event) (bool, error) {
	if x == nil {
		return true, nil
	}
	if x.field != "" {
		// The field is only compared: it need not be copied out of the
		// decode buffer.
		stringField := ev.fields.StringField
		if t, ok := ev.fields.(transientText); ok {
			stringField = t.transientStringField
		}
		if s, ok := stringField(x.field); ok {
			return (s == x.literal) != x.negate, nil
		}
		// Missing or not a string: let CEL decide, with its errors and its
		// cross-type equality.
	}
	out, err := x.prog.eval(ev)
	if err != nil {
		return false, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("evaluate %q: got %s, want bool", x.prog.source, out.Type().TypeName())
	}
	return bool(b), nil
}

// NumberExpr computes a number from an event, such as money at risk.
type NumberExpr struct {
	prog program
}

// Source returns the expression as written.
func (x *NumberExpr) Source() string { return x.prog.source }

// Eval returns the expression's value for ev as a float64.
func (x *NumberExpr) Eval(ev *Event) (float64, error) {
	out, err := x.prog.eval(ev)
	if err != nil {
		return 0, err
	}
	switch v := out.(type) {
	case types.Double:
		return float64(v), nil
	case types.Int:
		return float64(v), nil
	case types.Uint:
		return float64(v), nil
	}
	return 0, fmt.Errorf("evaluate %q: got %s, want a number", x.prog.source, out.Type().TypeName())
}

// Aggregate summarizes the open violations of one rule for severity tiers.
type Aggregate struct {
	Count     int
	Customers int
	Total     float64
}

// SeverityTier is one severity of a rule: the first tier whose condition
// holds over the rule's open violations names the alert's severity.
type SeverityTier struct {
	Name string
	// cond is nil for an unconditional tier.
	cond *program
}

// Holds reports whether the tier applies to agg.
func (t *SeverityTier) Holds(agg Aggregate) (bool, error) {
	if t.cond == nil {
		return true, nil
	}
	out, _, err := t.cond.prg.Eval(map[string]any{
		"count": int64(agg.Count), "customers": int64(agg.Customers), "total": agg.Total,
	})
	if err != nil {
		return false, fmt.Errorf("evaluate %q: %w", t.cond.source, err)
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("evaluate %q: got %s, want bool", t.cond.source, out.Type().TypeName())
	}
	return bool(b), nil
}

// compiler compiles the expressions of one file, turning CEL issues into
// located errors that point into the YAML file.
type compiler struct {
	file   string
	lines  []string
	events *cel.Env
	aggs   *cel.Env
	errs   *Errors
	// stream is the stream whose event the expressions being compiled read,
	// and lookups the rule's lookups; with checks they let TypeCheck compile
	// every event expression again against registered schemas.
	stream  *Stream
	lookups map[string]*Stream
	checks  *[]exprCheck
	// warns collects what is allowed but likely wrong (see checkCost).
	warns *Errors
}

// compile type-checks src and builds its program. want lists the acceptable
// output types; dyn is always accepted and checked at evaluation time.
func (c *compiler) compile(env *cel.Env, s Scalar, ctx errCtx, what string, want ...*cel.Type) (*program, *cel.Ast) {
	if s.notScalar {
		*c.errs = append(*c.errs, ctx.at(c.pos(s, 1, 0), what+": expected an expression string"))
		return nil, nil
	}
	if strings.TrimSpace(s.Value) == "" {
		*c.errs = append(*c.errs, ctx.at(c.pos(s, 1, 0), what+": empty expression"))
		return nil, nil
	}
	checked, iss := env.Compile(s.Value)
	if iss.Err() != nil {
		for _, e := range iss.Errors() {
			loc := e.Location
			p := c.pos(s, loc.Line(), loc.Column())
			err := ctx.at(p, fmt.Sprintf("%s: %s", what, e.Message))
			err.Snippet = c.snippet(p)
			*c.errs = append(*c.errs, err)
		}
		return nil, nil
	}
	out := checked.OutputType()
	ok := out.IsExactType(cel.DynType)
	for _, w := range want {
		ok = ok || out.IsExactType(w)
	}
	if !ok {
		names := make([]string, len(want))
		for i, w := range want {
			names[i] = w.String()
		}
		p := c.pos(s, 1, 0)
		err := ctx.at(p, fmt.Sprintf("%s: expression %q has type %s, want %s", what, s.Value, out, strings.Join(names, " or ")))
		err.Snippet = c.snippet(p)
		*c.errs = append(*c.errs, err)
		return nil, nil
	}
	if env != c.aggs && c.checks != nil && c.stream != nil {
		*c.checks = append(*c.checks, exprCheck{file: c.file, lines: c.lines, src: s, ctx: ctx, what: what, want: want, stream: c.stream, lookups: c.lookups})
	}
	opts := []cel.ProgramOption{cel.EvalOptions(cel.OptOptimize)}
	if env != c.aggs {
		ok, bounded := c.checkCost(env, checked, s, ctx, what)
		if !ok {
			return nil, nil
		}
		// The runtime limit tracks the cost of every step of every
		// evaluation (a third of the allocations of the per-event path). An
		// expression whose worst case on the largest accepted event is
		// within the limit cannot reach it, and runs without it.
		if !bounded {
			opts = append(opts, cel.CostLimit(costLimit))
		}
	} else {
		opts = append(opts, cel.CostLimit(costLimit))
	}
	prg, err := env.Program(checked, opts...)
	if err != nil {
		*c.errs = append(*c.errs, ctx.at(c.pos(s, 1, 0), fmt.Sprintf("%s: %v", what, err)))
		return nil, nil
	}
	return &program{source: s.Value, prg: prg}, checked
}

func (c *compiler) stringExpr(s Scalar, ctx errCtx, what string) *StringExpr {
	p, checked := c.compile(c.events, s, ctx, what, cel.StringType, cel.IntType)
	if p == nil {
		return nil
	}
	return &StringExpr{field: eventField(checked.NativeRep().Expr()), prog: *p}
}

func (c *compiler) timeExpr(s Scalar, ctx errCtx, what string) *TimeExpr {
	p, checked := c.compile(c.events, s, ctx, what, cel.TimestampType)
	if p == nil {
		return nil
	}
	x := &TimeExpr{prog: *p}
	if e := checked.NativeRep().Expr(); e.Kind() == ast.CallKind {
		call := e.AsCall()
		if call.FunctionName() == "timestamp" && len(call.Args()) == 1 && !call.IsMemberFunction() {
			x.field = eventField(call.Args()[0])
		}
	}
	return x
}

func (c *compiler) boolExpr(s Scalar, ctx errCtx, what string) *BoolExpr {
	p, checked := c.compile(c.events, s, ctx, what, cel.BoolType)
	if p == nil {
		return nil
	}
	x := &BoolExpr{prog: *p}
	if e := checked.NativeRep().Expr(); e.Kind() == ast.CallKind {
		call := e.AsCall()
		if fn := call.FunctionName(); (fn == "_==_" || fn == "_!=_") && len(call.Args()) == 2 {
			a, b := call.Args()[0], call.Args()[1]
			if eventField(a) == "" {
				a, b = b, a
			}
			if f := eventField(a); f != "" && b.Kind() == ast.LiteralKind {
				if lit, ok := b.AsLiteral().(types.String); ok {
					x.field, x.literal, x.negate = f, string(lit), fn == "_!=_"
				}
			}
		}
	}
	return x
}

func (c *compiler) numberExpr(s Scalar, ctx errCtx, what string) *NumberExpr {
	p, _ := c.compile(c.events, s, ctx, what, cel.DoubleType, cel.IntType, cel.UintType)
	if p == nil {
		return nil
	}
	return &NumberExpr{prog: *p}
}

// eventField returns F when e is exactly `event.F`, else "".
func eventField(e ast.Expr) string {
	if e.Kind() != ast.SelectKind {
		return ""
	}
	sel := e.AsSelect()
	if sel.IsTestOnly() || sel.Operand().Kind() != ast.IdentKind || sel.Operand().AsIdent() != "event" {
		return ""
	}
	return sel.FieldName()
}

// pos maps a position inside an expression (CEL's 1-based line, 0-based
// column) to the rule file. A literal block (|) keeps its lines, indented by
// the block's indentation. Every other style folds its source lines into
// one with spaces, so the offset is found by walking the source lines.
func (c *compiler) pos(s Scalar, celLine, celCol int) Pos {
	if s.Line == 0 {
		return Pos{File: c.file}
	}
	if celLine < 1 {
		celLine = 1
	}
	if s.Style&yaml.LiteralStyle != 0 {
		first := s.Line + 1
		if first > len(c.lines) || strings.TrimSpace(s.Value) == "" {
			return Pos{File: c.file, Line: s.Line, Column: s.Column}
		}
		return Pos{File: c.file, Line: s.Line + celLine, Column: c.indent(first) + 1 + celCol}
	}
	// The offset of the position in the expression's text.
	offset := celCol
	for i, l := 0, 1; l < celLine && i < len(s.Value); i++ {
		offset++
		if s.Value[i] == '\n' {
			l++
			offset = i + 1 + celCol
		}
	}
	line, col := s.Line, s.Column
	switch {
	case s.Style&yaml.FoldedStyle != 0:
		line++
		col = c.indent(line) + 1
	case s.Style&quotedStyles != 0:
		col++
	}
	for line <= len(c.lines) {
		text := strings.TrimRight(c.lines[line-1], " \t\r")
		rest := 0
		if col-1 <= len(text) {
			rest = len(text) - (col - 1)
		}
		if offset <= rest || line == len(c.lines) {
			return Pos{File: c.file, Line: line, Column: col + min(offset, rest)}
		}
		offset -= rest + 1 // the line break folded into one space
		line++
		col = c.indent(line) + 1
	}
	return Pos{File: c.file, Line: s.Line, Column: s.Column}
}

func (c *compiler) indent(line int) int {
	if line < 1 || line > len(c.lines) {
		return 0
	}
	l := c.lines[line-1]
	return len(l) - len(strings.TrimLeft(l, " \t"))
}

// snippet returns the file line at p and a caret under its column.
func (c *compiler) snippet(p Pos) string {
	if p.Line < 1 || p.Line > len(c.lines) {
		return ""
	}
	l := strings.TrimRight(c.lines[p.Line-1], "\r")
	col := p.Column - 1
	if col < 0 {
		col = 0
	}
	if col > len(l) {
		col = len(l)
	}
	return "  | " + l + "\n  | " + strings.Repeat(" ", col) + "^"
}
