package ruletest

// Test file values as JSON: a YAML mapping is written as the JSON a
// producer would send, numbers as written, ${t+D} clock times expanded.

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/invmon/invmon/internal/strictyaml"
	"gopkg.in/yaml.v3"
)

// jsonNumber matches the JSON number grammar: a YAML number written that way
// is passed on as written, so 25.0 stays a double for the rules.
var jsonNumber = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$`)

// json writes a YAML node as JSON. It walks the node rather than decoding it
// into Go values so that key order, number spelling and positions for errors
// are kept.
func (d *decoder) json(b *strings.Builder, n *yaml.Node) bool {
	n = strictyaml.Deref(n)
	switch n.Kind {
	case yaml.MappingNode:
		pairs, ok := d.pairs(n)
		b.WriteByte('{')
		for i, p := range pairs {
			if i > 0 {
				b.WriteByte(',')
			}
			kb, _ := json.Marshal(p.key)
			b.Write(kb)
			b.WriteByte(':')
			ok = d.json(b, p.value) && ok
		}
		b.WriteByte('}')
		return ok
	case yaml.SequenceNode:
		b.WriteByte('[')
		ok := true
		for i, c := range n.Content {
			if i > 0 {
				b.WriteByte(',')
			}
			ok = d.json(b, c) && ok
		}
		b.WriteByte(']')
		return ok
	case yaml.ScalarNode:
		return d.jsonScalar(b, n)
	}
	d.errorf(n, "value: unsupported YAML node")
	return false
}

type pair struct {
	key   string
	value *yaml.Node
}

// pairs returns a mapping's entries in order, with YAML merge keys
// (`<<: *base`) expanded: an author writes one base event with an anchor and
// varies a field or two per record. Keys written in the mapping win over
// merged ones, as YAML specifies.
func (d *decoder) pairs(n *yaml.Node) ([]pair, bool) {
	var own, merged []pair
	ok := true
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := strictyaml.Deref(n.Content[i]), n.Content[i+1]
		switch {
		case k.Kind != yaml.ScalarNode:
			d.errorf(k, "value: a JSON object key must be a string, got %s", strictyaml.Kind(k))
			ok = false
		case k.ShortTag() == "!!merge":
			v = strictyaml.Deref(v)
			srcs := []*yaml.Node{v}
			if v.Kind == yaml.SequenceNode {
				srcs = v.Content
			}
			for _, src := range srcs {
				src = strictyaml.Deref(src)
				if src.Kind != yaml.MappingNode {
					d.errorf(src, "value: << merges a mapping, got %s", strictyaml.Kind(src))
					ok = false
					continue
				}
				ps, pok := d.pairs(src)
				ok = ok && pok
				for _, p := range ps {
					if !hasKey(merged, p.key) {
						merged = append(merged, p)
					}
				}
			}
		case hasKey(own, k.Value):
			d.errorf(k, "value: key %q given twice", k.Value)
			ok = false
		default:
			own = append(own, pair{k.Value, v})
		}
	}
	out := merged[:0:0]
	for _, p := range merged {
		if !hasKey(own, p.key) {
			out = append(out, p)
		}
	}
	return append(out, own...), ok
}

func hasKey(ps []pair, k string) bool {
	for _, p := range ps {
		if p.key == k {
			return true
		}
	}
	return false
}

func (d *decoder) jsonScalar(b *strings.Builder, n *yaml.Node) bool {
	switch n.ShortTag() {
	case "!!str", "!!timestamp", "!!binary":
		s, ok := d.expand(n, n.Value)
		if !ok {
			return false
		}
		sb, _ := json.Marshal(s)
		b.Write(sb)
		return true
	case "!!null":
		b.WriteString("null")
		return true
	case "!!bool":
		var v bool
		if err := n.Decode(&v); err != nil {
			d.errorf(n, "value: %v", err)
			return false
		}
		b.WriteString(strconv.FormatBool(v))
		return true
	case "!!int", "!!float":
		if jsonNumber.MatchString(n.Value) {
			b.WriteString(n.Value)
			return true
		}
		if n.ShortTag() == "!!int" {
			var i int64
			if err := n.Decode(&i); err == nil {
				b.WriteString(strconv.FormatInt(i, 10))
				return true
			}
		}
		var f float64
		if err := n.Decode(&f); err != nil || f != f || f > 1e308 || f < -1e308 {
			d.errorf(n, "value: %q has no JSON number form", n.Value)
			return false
		}
		s := strconv.FormatFloat(f, 'g', -1, 64)
		if n.ShortTag() == "!!float" && !strings.ContainsAny(s, ".eE") {
			s += ".0" // keep a YAML float a JSON double
		}
		b.WriteString(s)
		return true
	}
	d.errorf(n, "value: tag %s has no JSON form", n.Tag)
	return false
}

// expand replaces ${t}, ${t+D} and ${t-D} with the RFC 3339 time start+D,
// and $${ with a literal "${".
func (d *decoder) expand(n *yaml.Node, s string) (string, bool) {
	if !strings.Contains(s, "${") {
		return s, true
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), true
		}
		if i > 0 && s[i-1] == '$' {
			b.WriteString(s[:i]) // "$$" + "{" : the first $ escapes
			b.WriteString("{")
			s = s[i+2:]
			continue
		}
		b.WriteString(s[:i])
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			d.errorf(n, "unterminated ${ in %q (write $${ for a literal ${)", s)
			return "", false
		}
		expr := s[i+2 : i+end]
		t, err := d.clockTime(expr)
		if err != nil {
			d.errorf(n, "${%s}: %v", expr, err)
			return "", false
		}
		b.WriteString(t.Format(time.RFC3339Nano))
		s = s[i+end+1:]
	}
}

func (d *decoder) clockTime(expr string) (time.Time, error) {
	expr = strings.ReplaceAll(expr, " ", "")
	rest, ok := strings.CutPrefix(expr, "t")
	if !ok {
		return time.Time{}, fmt.Errorf("want t, t+D or t-D (D a duration such as 30s)")
	}
	if rest == "" {
		return d.start, nil
	}
	sign := time.Duration(1)
	switch rest[0] {
	case '+':
	case '-':
		sign = -1
	default:
		return time.Time{}, fmt.Errorf("want t, t+D or t-D (D a duration such as 30s)")
	}
	off, err := strictyaml.ParseDuration(rest[1:])
	if err != nil {
		return time.Time{}, fmt.Errorf("bad duration %q (such as 30s, 1m30s or 1d)", rest[1:])
	}
	return d.start.Add(sign * off), nil
}
