package rules

import "testing"

// The fast path of `event.f == "lit"` must agree with CEL on every input.
func TestEqualityFastPathAgreesWithCEL(t *testing.T) {
	c := &compiler{file: "t.yaml", errs: &Errors{}}
	var err error
	if c.events, err = eventEnv(); err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{`event.status == "captured"`, `"captured" == event.status`, `event.status != "captured"`} {
		fast := c.boolExpr(Scalar{Value: src, Set: true, Line: 1, Column: 1}, errCtx{}, "if")
		if fast == nil || fast.field != "status" {
			t.Fatalf("%s: no fast path", src)
		}
		slow := *fast
		slow.field = ""
		for _, v := range []string{`{"status":"captured"}`, `{"status":"pending"}`, `{"status":""}`, `{"status":"captured\u0000"}`, `{"status":3}`, `{}`, `{"status":null}`} {
			ev, err := ParseEvent("t", []byte(v))
			if err != nil {
				t.Fatal(err)
			}
			f, ferr := fast.Eval(ev)
			s, serr := slow.Eval(ev)
			if f != s || (ferr == nil) != (serr == nil) {
				t.Errorf("%s on %s: fast %v %v, CEL %v %v", src, v, f, ferr, s, serr)
			}
		}
	}
}
