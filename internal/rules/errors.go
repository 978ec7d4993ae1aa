package rules

import (
	"errors"
	"fmt"
	"strings"
)

// Pos is a position in a rule file, 1-based like editors show it.
type Pos struct {
	File   string
	Line   int
	Column int
}

func (p Pos) String() string {
	if p.Line == 0 {
		return p.File
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Column)
}

// Error is one problem in a rule file, located at a line and column.
//
// Its text reads `file:line:col: rule "name": message`, optionally followed by
// the offending source line and a caret under the column, so that an editor or
// a terminal can jump straight to it.
type Error struct {
	Pos  Pos
	Rule string // the rule the error belongs to; empty for file- and stream-level errors
	// Stream is the stream the error belongs to; empty for rule- and file-level errors.
	Stream  string
	Message string
	// Snippet is the source line and a caret line, when known.
	Snippet string
	Err     error // the underlying cause, if any
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Pos.String())
	b.WriteString(": ")
	switch {
	case e.Rule != "":
		fmt.Fprintf(&b, "rule %q: ", e.Rule)
	case e.Stream != "":
		fmt.Fprintf(&b, "stream %q: ", e.Stream)
	}
	b.WriteString(e.Message)
	if e.Snippet != "" {
		b.WriteString("\n")
		b.WriteString(e.Snippet)
	}
	return b.String()
}

// Unwrap returns the underlying cause so errors.Is and errors.As see it.
func (e *Error) Unwrap() error { return e.Err }

// Errors is every problem found while loading rule files. Loading never stops
// at the first problem: an author fixes a file in one pass.
type Errors []*Error

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Unwrap exposes each error to errors.Is and errors.As.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// AsErrors returns the located errors inside err, if it holds any.
func AsErrors(err error) Errors {
	var es Errors
	if errors.As(err, &es) {
		return es
	}
	var e *Error
	if errors.As(err, &e) {
		return Errors{e}
	}
	return nil
}
