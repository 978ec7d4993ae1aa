package rules

import (
	"fmt"
	"regexp"
	"regexp/syntax"
	"strings"
	"text/template"
	"text/template/parse"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/overloads"
	"gopkg.in/yaml.v3"
)

// Limits of the rule format. A rule file is loaded by `rules check` and, on
// SIGHUP, inside the running monitor: nothing in it may cost unbounded time
// or memory.
const (
	// MaxFileBytes bounds one rule file (1 MiB): the example files are a
	// few KiB.
	MaxFileBytes = 1 << 20
	// MaxYAMLNodes bounds a rule file's YAML nodes with every alias expanded
	// (100,000): anchors that share labels cost a few nodes each, while
	// nested aliases ("billion laughs") expand exponentially.
	MaxYAMLNodes = 100_000
	// MaxEventBytes is the largest record value the engine evaluates
	// (256 KiB); larger ones are dead letters. Expression costs are estimated
	// for events of this size.
	MaxEventBytes = 256 << 10
	// CostBudget is the estimated worst-case cost of one expression on an
	// event of MaxEventBytes above which the rule is rejected (1,000,000,
	// ten times the runtime limit costLimit). Between costLimit and this,
	// `rules check` warns: on such an event the expression would stop at the
	// runtime limit and the record be a dead letter.
	CostBudget = 10 * costLimit
	// MaxAnnotationBytes bounds an annotation template's text (4 KiB) and
	// MaxAnnotationOutput what one expansion may write (16 KiB).
	MaxAnnotationBytes  = 4 << 10
	MaxAnnotationOutput = 16 << 10
)

// checkYAMLSize rejects a document whose alias expansion exceeds
// MaxYAMLNodes, naming the alias that crosses the limit. It runs before
// anything walks or decodes the tree, and counts each node once per
// reference, memoized, so the check itself is linear in the file.
func checkYAMLSize(root *yaml.Node, loc func(*yaml.Node) Pos) *Error {
	sizes := map[*yaml.Node]int{}
	var over *yaml.Node
	var size func(n *yaml.Node, depth int) int
	size = func(n *yaml.Node, depth int) int {
		if n == nil || over != nil {
			return 0
		}
		if s, ok := sizes[n]; ok {
			return s
		}
		if depth > 1000 {
			over = n
			return MaxYAMLNodes + 1
		}
		s := 1
		if n.Kind == yaml.AliasNode {
			s += size(n.Alias, depth+1)
		}
		for _, c := range n.Content {
			s += size(c, depth+1)
			if s > MaxYAMLNodes {
				if over == nil {
					over = c
				}
				break
			}
		}
		if s > MaxYAMLNodes && over == nil {
			over = n
		}
		sizes[n] = s
		return s
	}
	if size(root, 0) <= MaxYAMLNodes && over == nil {
		return nil
	}
	// Point at the first alias inside the offending subtree: that is what
	// the author wrote to make it large.
	at := over
	var find func(n *yaml.Node) bool
	find = func(n *yaml.Node) bool {
		if n.Kind == yaml.AliasNode {
			at = n
			return true
		}
		for _, c := range n.Content {
			if find(c) {
				return true
			}
		}
		return false
	}
	find(over)
	return &Error{Pos: loc(at), Message: fmt.Sprintf("the document expands to more than %d YAML nodes (nested aliases?)", MaxYAMLNodes)}
}

// eventSizes tells cel-go's cost estimator how large event data can be: any
// string, list or map read from an event or record is at most the event's
// size.
type eventSizes struct {
	// unboundedRecord sizes the record's coordinates by what Kafka allows
	// rather than by what they usually are.
	unboundedRecord bool
}

func (s eventSizes) EstimateSize(n checker.AstNode) *checker.SizeEstimate {
	// The record's coordinates are short: a topic name is at most 249
	// characters, and keys that scope partitions are ids.
	if p := n.Path(); len(p) > 0 && p[0] == "record" {
		if s.unboundedRecord {
			return &checker.SizeEstimate{Min: 0, Max: 1 << 32}
		}
		return &checker.SizeEstimate{Min: 0, Max: 1 << 10}
	}
	// Event fields, and lookups (latest events too), are at most an event.
	return &checker.SizeEstimate{Min: 0, Max: MaxEventBytes}
}

// EstimateCallCost prices regular expressions by their compiled program,
// not their text: `\w{999}` is 8 characters but a thousand states, each of
// which RE2 steps for every input character.
func (eventSizes) EstimateCallCost(function, overloadID string, target *checker.AstNode, args []checker.AstNode) *checker.CallEstimate {
	switch overloadID {
	case overloads.Matches, overloads.MatchesString:
	default:
		return nil
	}
	var str, re checker.AstNode
	switch {
	case overloadID == overloads.MatchesString && target != nil && len(args) == 1:
		str, re = *target, args[0]
	case overloadID == overloads.Matches && len(args) == 2:
		str, re = args[0], args[1]
	default:
		return nil
	}
	states := uint64(MaxEventBytes) // a pattern from data: assume the worst
	if pat, ok := constString(re.Expr()); ok {
		if n, err := regexStates(pat); err == nil {
			states = n
		}
	}
	strMax := uint64(MaxEventBytes)
	if s := str.ComputedSize(); s != nil {
		strMax = s.Max
	}
	cost := (strMax + 1) / 10 * max(states, 1)
	return &checker.CallEstimate{CostEstimate: checker.CostEstimate{Min: 1, Max: cost}}
}

func constString(e ast.Expr) (string, bool) {
	if e.Kind() != ast.LiteralKind {
		return "", false
	}
	s, ok := e.AsLiteral().Value().(string)
	return s, ok
}

// regexStates is the size of the pattern's compiled program.
func regexStates(pat string) (uint64, error) {
	re, err := syntax.Parse(pat, syntax.Perl)
	if err != nil {
		return 0, err
	}
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		return 0, err
	}
	return uint64(len(prog.Inst)), nil
}

// checkCost estimates the worst-case cost of a checked expression on an
// event of MaxEventBytes. It returns an error over CostBudget, and a warning
// over the runtime limit. A regular expression that is not a constant is an
// error: a pattern taken from event data could cost anything. ok says the
// expression is accepted; bounded that its worst case, with the record's key
// of any size, is within the runtime limit, so the limit need not be tracked.
func (c *compiler) checkCost(env *cel.Env, checked *cel.Ast, s Scalar, ctx errCtx, what string) (ok, bounded bool) {
	if msg := nonConstantRegex(checked.NativeRep().Expr()); msg != "" {
		p := c.pos(s, 1, 0)
		e := ctx.at(p, what+": "+msg)
		e.Snippet = c.snippet(p)
		*c.errs = append(*c.errs, e)
		return false, false
	}
	est, err := env.EstimateCost(checked, eventSizes{})
	if err != nil {
		*c.errs = append(*c.errs, ctx.at(c.pos(s, 1, 0), fmt.Sprintf("%s: estimate cost: %v", what, err)))
		return false, false
	}
	switch {
	case est.Max > CostBudget:
		p := c.pos(s, 1, 0)
		e := ctx.at(p, fmt.Sprintf("%s: estimated worst-case cost %s on a %d KiB event exceeds the budget of %d; narrow the expression (a simpler regular expression, no nested comprehension over event lists)",
			what, costString(est.Max), MaxEventBytes>>10, CostBudget))
		e.Snippet = c.snippet(p)
		*c.errs = append(*c.errs, e)
		return false, false
	case est.Max > costLimit:
		p := c.pos(s, 1, 0)
		w := ctx.at(p, fmt.Sprintf("%s: estimated worst-case cost %s on a %d KiB event exceeds the per-evaluation limit of %d: such an event would be a dead letter",
			what, costString(est.Max), MaxEventBytes>>10, costLimit))
		if c.warns != nil {
			*c.warns = append(*c.warns, w)
		}
	}
	// The record's key and headers are not bounded by MaxEventBytes (only
	// the value is checked before evaluation), so whether an expression can
	// run without the runtime limit is estimated with them unbounded.
	worst, err := env.EstimateCost(checked, eventSizes{unboundedRecord: true})
	return true, err == nil && worst.Max <= costLimit
}

func costString(n uint64) string {
	if n == ^uint64(0) {
		return "unbounded"
	}
	return fmt.Sprint(n)
}

// nonConstantRegex finds a matches() call whose pattern is not a literal.
func nonConstantRegex(e ast.Expr) string {
	var msg string
	visit := ast.NewExprVisitor(func(e ast.Expr) {
		if msg != "" || e.Kind() != ast.CallKind {
			return
		}
		call := e.AsCall()
		if call.FunctionName() != overloads.Matches {
			return
		}
		args := call.Args()
		if len(args) == 0 {
			return
		}
		pat := args[len(args)-1]
		s, ok := constString(pat)
		if !ok {
			msg = "matches() needs a constant pattern: a pattern taken from event data could cost anything to run"
			return
		}
		if _, err := regexp.Compile(s); err != nil {
			msg = fmt.Sprintf("matches(): %v", err)
		}
	})
	ast.PostOrderVisit(e, visit)
	return msg
}

// AnnotationFields are the fields an annotation template may read: those of
// the alert package's Aggregate, which expands the templates (a test there
// keeps the two in step).
var AnnotationFields = []string{"Rule", "Count", "Customers", "Total", "TotalText", "TotalBand", "ImpactUnit", "Unit", "Top"}

// printfWidth finds a printf width or precision of four digits or more: it
// would allocate that much before any output bound applies.
var printfWidth = regexp.MustCompile(`%[-+# 0]*(\d{4,}|\*|\d*\.(\d{4,}|\*))`)

// checkAnnotation parses an annotation template and checks what it reads:
// only Aggregate's fields, range only over .Top, bounded printf widths, and
// text of at most MaxAnnotationBytes.
func checkAnnotation(name, text string) error {
	if len(text) > MaxAnnotationBytes {
		return fmt.Errorf("%d bytes, more than the %d an annotation may have", len(text), MaxAnnotationBytes)
	}
	if !strings.Contains(text, "{{") {
		return nil
	}
	t, err := template.New(name).Option("missingkey=error").Parse(text)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, f := range AnnotationFields {
		known[f] = true
	}
	var problem error
	var walk func(n parse.Node, inRange bool)
	walk = func(n parse.Node, inRange bool) {
		if problem != nil || n == nil {
			return
		}
		switch n := n.(type) {
		case *parse.ListNode:
			if n == nil {
				return
			}
			for _, c := range n.Nodes {
				walk(c, inRange)
			}
		case *parse.ActionNode:
			walk(n.Pipe, inRange)
		case *parse.PipeNode:
			if n == nil {
				return
			}
			for _, c := range n.Cmds {
				walk(c, inRange)
			}
		case *parse.CommandNode:
			for _, a := range n.Args {
				walk(a, inRange)
			}
		case *parse.FieldNode:
			if !inRange && !known[n.Ident[0]] {
				problem = fmt.Errorf("no field %q (known: %s)", n.Ident[0], strings.Join(AnnotationFields, ", "))
			}
		case *parse.StringNode:
			if printfWidth.MatchString(n.Text) {
				problem = fmt.Errorf("format %q: widths and precisions are limited to three digits", n.Text)
			}
		case *parse.IfNode:
			walk(n.Pipe, inRange)
			walk(n.List, inRange)
			walk(n.ElseList, inRange)
		case *parse.WithNode:
			walk(n.Pipe, inRange)
			walk(n.List, true)
			walk(n.ElseList, inRange)
		case *parse.RangeNode:
			if !rangesOverTop(n.Pipe) {
				problem = fmt.Errorf("range may only iterate over .Top")
				return
			}
			walk(n.List, true)
			walk(n.ElseList, inRange)
		case *parse.TemplateNode:
			problem = fmt.Errorf("template calls are not supported in annotations")
		}
	}
	walk(t.Tree.Root, false)
	return problem
}

func rangesOverTop(p *parse.PipeNode) bool {
	if p == nil || len(p.Cmds) != 1 || len(p.Cmds[0].Args) != 1 {
		return false
	}
	f, ok := p.Cmds[0].Args[0].(*parse.FieldNode)
	return ok && len(f.Ident) == 1 && f.Ident[0] == "Top"
}
