package rules

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"time"
	"unsafe"

	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
	"github.com/valyala/fastjson"
)

// Event is one decoded record as rule expressions see it. Its value is
// decoded once; fields are converted to CEL values only when an expression
// reads them, so an event pays only for the fields the rules reference.
//
// An Event is reused across records by its owner (see Decoder) to keep
// allocations off the per-event path; it is not safe for concurrent use.
type Event struct {
	// Topic, Partition, Offset and Key identify the Kafka record.
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	// Timestamp is the record's Kafka timestamp.
	Timestamp time.Time

	// Lookups resolves the names of a rule's lookups; the engine sets it
	// before evaluating that rule's expressions.
	Lookups Resolver

	fields Fields
}

// Fields is a decoded record value as rules read it, whatever its format:
// `event` in CEL is the Fields itself (a map from field name to value), and
// the three accessors are the fast paths that let the usual id, key, time
// and filter expressions skip CEL. JSON, Avro and Protobuf each implement
// it (see docs/rules.md for how their types map to CEL's).
type Fields interface {
	traits.Mapper
	// StringField returns a top-level field that is a string (or an enum).
	StringField(name string) (string, bool)
	// TextField returns a top-level string field, or an integral number
	// as decimal text: how ids and keys are read.
	TextField(name string) (string, bool)
	// TimeField returns a top-level field that is a timestamp, or a string
	// in RFC 3339.
	TimeField(name string) (time.Time, error)
}

// ValueFormat decodes the record values of a format other than JSON, such
// as Avro framed with a Schema Registry id. Implementations are safe for
// concurrent use (see internal/schema).
type ValueFormat interface {
	// DecodeValue decodes one record value of topic. An error wrapping
	// ErrSchemaUnavailable means the value could not be judged yet (the
	// registry is unreachable): the caller retries it later and neither
	// dead-letters nor skips it. Any other error makes the record poison.
	DecodeValue(topic string, value []byte) (Fields, error)
}

// ErrSchemaUnavailable marks a decode error that is not the record's fault:
// the schema it names could not be fetched. Such a record is retried, never
// dead-lettered or skipped.
var ErrSchemaUnavailable = errors.New("schema unavailable")

// Resolver resolves variables beyond event and record: a rule's lookups.
type Resolver interface {
	Resolve(name string, ev *Event) (ref.Val, bool)
}

// NewObject exposes a parsed JSON object to CEL as a map.
func NewObject(v *fastjson.Value) ref.Val { return jsonObject{v: v} }

// EmptyObject is the map a lookup resolves to when its entity is unknown, so
// that `has(account.tier)` and `account.?tier` work as authors expect.
var EmptyObject ref.Val = types.NewStringInterfaceMap(types.DefaultTypeAdapter, map[string]any{})

// Decoder decodes record values into Events, by the format of the stream
// that reads the topic. It owns a fastjson parser and reuses it, so it is
// not safe for concurrent use: use one per worker. The zero Decoder reads
// JSON only; NewDecoder reads every format a rule set's streams declare.
type Decoder struct {
	parser  fastjson.Parser
	event   Event
	formats map[string]ValueFormat
}

// NewDecoder returns a Decoder for the formats of rs's streams (see
// RuleSet.BindFormats); a nil rs reads JSON only.
func NewDecoder(rs *RuleSet) Decoder {
	if rs == nil {
		return Decoder{}
	}
	return Decoder{formats: rs.formats}
}

// Decode decodes a record value by its topic's format. The returned Event is
// valid until the next call to Decode.
func (d *Decoder) Decode(topic string, partition int32, offset int64, key, value []byte, ts time.Time) (*Event, error) {
	fields, err := d.fields(topic, value)
	if err != nil {
		return nil, err
	}
	d.event = Event{Topic: topic, Partition: partition, Offset: offset, Key: key, Timestamp: ts, fields: fields}
	return &d.event, nil
}

func (d *Decoder) fields(topic string, value []byte) (Fields, error) {
	if f := d.formats[topic]; f != nil {
		return f.DecodeValue(topic, value)
	}
	v, err := d.parser.ParseBytes(value)
	if err != nil {
		return nil, fmt.Errorf("malformed json: %w", err)
	}
	if v.Type() != fastjson.TypeObject {
		return nil, fmt.Errorf("malformed json: value is %s, not an object", v.Type())
	}
	return jsonObject{v: v}, nil
}

// Object decodes a stored record value of topic into a CEL map that stays
// valid: the latest event of a looked-up entity. It is off the per-event path.
func (d *Decoder) Object(topic string, value []byte) (ref.Val, error) {
	if f := d.formats[topic]; f != nil {
		return f.DecodeValue(topic, value)
	}
	var p fastjson.Parser
	v, err := p.ParseBytes(value)
	if err != nil {
		return nil, fmt.Errorf("malformed json: %w", err)
	}
	return jsonObject{v: v}, nil
}

// NeedsSchema reports whether topic's values are decoded with schemas from a
// registry (and may therefore fail with ErrSchemaUnavailable).
func (d *Decoder) NeedsSchema(topic string) bool { return d.formats[topic] != nil }

// Fields returns the event's decoded value.
func (e *Event) Fields() Fields { return e.fields }

// ParseEvent parses a JSON record value into a new Event that stays valid;
// it is for tests and tools, not the per-event path.
func ParseEvent(topic string, value []byte) (*Event, error) {
	return NewEvent(topic, value, nil)
}

// NewEvent decodes a record value of topic with format f (JSON when nil)
// into a new Event that stays valid; for tests, tools and benchmarks.
func NewEvent(topic string, value []byte, f ValueFormat) (*Event, error) {
	d := Decoder{}
	if f != nil {
		d.formats = map[string]ValueFormat{topic: f}
	}
	ev, err := d.Decode(topic, 0, 0, nil, value, time.Time{})
	if err != nil {
		return nil, err
	}
	out := *ev
	return &out, nil
}

// transientText is implemented by Fields that can return a text field
// without copying it out of their decode buffer.
type transientText interface {
	transientTextField(name string) (string, bool)
	transientStringField(name string) (string, bool)
}

// transientStringField is StringField sharing the parser's buffer: valid
// until the Decoder that made the event decodes again.
func (o jsonObject) transientStringField(field string) (string, bool) {
	if v := o.v.Get(field); v != nil && v.Type() == fastjson.TypeString {
		b, _ := v.StringBytes()
		if len(b) == 0 {
			return "", true
		}
		return unsafe.String(&b[0], len(b)), true
	}
	return "", false
}

// transientTextField is TextField sharing the parser's buffer: valid until
// the Decoder that made the event decodes again.
func (o jsonObject) transientTextField(field string) (string, bool) {
	v := o.v.Get(field)
	if v == nil || v.Type() != fastjson.TypeString {
		return o.TextField(field)
	}
	b, _ := v.StringBytes()
	if len(b) == 0 {
		return "", true
	}
	return unsafe.String(&b[0], len(b)), true
}

// TextField implements Fields: a top-level string or integral number.
func (o jsonObject) TextField(field string) (string, bool) {
	v := o.v.Get(field)
	if v == nil {
		return "", false
	}
	switch v.Type() {
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		return string(b), true
	case fastjson.TypeNumber:
		if i, err := v.Int64(); err == nil {
			return strconv.FormatInt(i, 10), true
		}
		return v.String(), true
	default:
		return "", false
	}
}

// StringField implements Fields: a top-level string.
func (o jsonObject) StringField(field string) (string, bool) {
	if v := o.v.Get(field); v != nil && v.Type() == fastjson.TypeString {
		b, _ := v.StringBytes()
		return string(b), true
	}
	return "", false
}

// TimeField implements Fields: a top-level RFC 3339 string.
func (o jsonObject) TimeField(field string) (time.Time, error) {
	v := o.v.Get(field)
	if v == nil {
		return time.Time{}, fmt.Errorf("no field %q", field)
	}
	b, err := v.StringBytes()
	if err != nil {
		return time.Time{}, fmt.Errorf("field %q: %w", field, err)
	}
	t, err := time.Parse(time.RFC3339Nano, string(b))
	if err != nil {
		return time.Time{}, fmt.Errorf("field %q: %w", field, err)
	}
	return t, nil
}

// jsonObject exposes a fastjson object to CEL as a map(string, dyn). Integral
// JSON numbers become CEL ints and others doubles, so `event.amount_cents * 2`
// and `event.amount_cents > 100` both work as an author expects.
type jsonObject struct {
	v *fastjson.Value
}

var (
	_ traits.Mapper = jsonObject{}
	_ traits.Lister = jsonArray{}
)

func jsonToVal(v *fastjson.Value) ref.Val {
	switch v.Type() {
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		return types.String(b)
	case fastjson.TypeNumber:
		if i, err := v.Int64(); err == nil {
			return types.Int(i)
		}
		f, _ := v.Float64()
		return types.Double(f)
	case fastjson.TypeTrue:
		return types.True
	case fastjson.TypeFalse:
		return types.False
	case fastjson.TypeNull:
		return types.NullValue
	case fastjson.TypeObject:
		return jsonObject{v: v}
	case fastjson.TypeArray:
		return jsonArray{v: v}
	}
	return types.NewErr("unsupported json type %s", v.Type())
}

func (o jsonObject) native() map[string]any {
	m := map[string]any{}
	obj, _ := o.v.Object()
	obj.Visit(func(k []byte, v *fastjson.Value) { m[string(k)] = jsonToVal(v) })
	return m
}

func (o jsonObject) materialize() ref.Val {
	return types.DefaultTypeAdapter.NativeToValue(o.native())
}

func (o jsonObject) ConvertToNative(t reflect.Type) (any, error) {
	return o.materialize().ConvertToNative(t)
}
func (o jsonObject) ConvertToType(t ref.Type) ref.Val { return o.materialize().ConvertToType(t) }
func (o jsonObject) Equal(other ref.Val) ref.Val      { return o.materialize().Equal(other) }
func (o jsonObject) Type() ref.Type                   { return types.MapType }
func (o jsonObject) Value() any                       { return o.native() }
func (o jsonObject) Iterator() traits.Iterator {
	return o.materialize().(traits.Mapper).Iterator()
}

func (o jsonObject) Size() ref.Val {
	obj, _ := o.v.Object()
	return types.Int(obj.Len())
}

func (o jsonObject) Find(key ref.Val) (ref.Val, bool) {
	k, ok := key.(types.String)
	if !ok {
		return types.MaybeNoSuchOverloadErr(key), false
	}
	f := o.v.Get(string(k))
	if f == nil {
		return nil, false
	}
	return jsonToVal(f), true
}

func (o jsonObject) Get(key ref.Val) ref.Val      { return MapGet(o.Find, key) }
func (o jsonObject) Contains(key ref.Val) ref.Val { return MapContains(o.Find, key) }

// MapGet is traits.Mapper's Get for a lazy event view that implements Find
// (JSON here, Protobuf in package schema): the value, Find's error,
// or "no such key".
func MapGet(find func(key ref.Val) (ref.Val, bool), key ref.Val) ref.Val {
	v, found := find(key)
	if !found {
		if v != nil {
			return v
		}
		return types.NewErr("no such key: %v", key)
	}
	return v
}

// MapContains is traits.Mapper's Contains for a lazy event view that
// implements Find.
func MapContains(find func(key ref.Val) (ref.Val, bool), key ref.Val) ref.Val {
	_, found := find(key)
	return types.Bool(found)
}

// jsonArray exposes a fastjson array to CEL as a list(dyn).
type jsonArray struct {
	v *fastjson.Value
}

func (a jsonArray) items() []*fastjson.Value { items, _ := a.v.Array(); return items }

func (a jsonArray) materialize() ref.Val {
	items := a.items()
	vals := make([]ref.Val, len(items))
	for i, it := range items {
		vals[i] = jsonToVal(it)
	}
	return types.DefaultTypeAdapter.NativeToValue(vals)
}

func (a jsonArray) ConvertToNative(t reflect.Type) (any, error) {
	return a.materialize().ConvertToNative(t)
}
func (a jsonArray) ConvertToType(t ref.Type) ref.Val { return a.materialize().ConvertToType(t) }
func (a jsonArray) Equal(other ref.Val) ref.Val      { return a.materialize().Equal(other) }
func (a jsonArray) Type() ref.Type                   { return types.ListType }
func (a jsonArray) Value() any                       { return a.materialize().Value() }
func (a jsonArray) Iterator() traits.Iterator        { return a.materialize().(traits.Lister).Iterator() }
func (a jsonArray) Size() ref.Val                    { return types.Int(len(a.items())) }
func (a jsonArray) Contains(v ref.Val) ref.Val       { return a.materialize().(traits.Lister).Contains(v) }
func (a jsonArray) Add(o ref.Val) ref.Val            { return a.materialize().(traits.Lister).Add(o) }
func (a jsonArray) Get(i ref.Val) ref.Val {
	idx, ok := i.(types.Int)
	items := a.items()
	if !ok || idx < 0 || int(idx) >= len(items) {
		return types.NewErr("index out of range: %v", i)
	}
	return jsonToVal(items[idx])
}

// JSONFields exposes a parsed JSON object as Fields, the way a JSON stream's
// events are read; for formats that frame JSON (json_schema).
func JSONFields(v *fastjson.Value) Fields { return jsonObject{v: v} }
