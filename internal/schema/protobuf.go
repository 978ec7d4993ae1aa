package schema

import (
	"context"
	"fmt"
	"reflect"
	"strconv"
	"time"

	"github.com/bufbuild/protocompile"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/invmon/invmon/internal/rules"
)

// protoDecoder decodes Protobuf values with the writer's .proto file,
// compiled from the text the registry returns (with its references).
type protoDecoder struct {
	file protoreflect.FileDescriptor
}

// mainProto is the name the compiled schema text is given; references keep
// the import paths the schema uses for them.
const mainProto = "invmon-registered-schema.proto"

func newProtobuf(text string, refs []reference) (*protoDecoder, error) {
	files := map[string]string{mainProto: text}
	for _, r := range refs {
		files[r.Name] = r.Text
	}
	return compileProto(files, mainProto)
}

// CompileProto compiles .proto sources given by file name and returns the
// descriptor of main; for the simulator, which encodes with the same files.
func CompileProto(files map[string]string, main string) (protoreflect.FileDescriptor, error) {
	d, err := compileProto(files, main)
	if err != nil {
		return nil, err
	}
	return d.file, nil
}

func compileProto(files map[string]string, main string) (*protoDecoder, error) {
	c := protocompile.Compiler{
		Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{
			Accessor: protocompile.SourceAccessorFromMap(files),
		}),
	}
	out, err := c.Compile(context.Background(), main)
	if err != nil {
		return nil, fmt.Errorf("protobuf schema: %w", err)
	}
	return &protoDecoder{file: out[0]}, nil
}

func (d *protoDecoder) format() string { return rules.FormatProtobuf }

// message resolves Confluent's message-index list: [] is the first message
// of the file, [i, j] the j-th nested message of the i-th.
func (d *protoDecoder) message(index []int) (protoreflect.MessageDescriptor, error) {
	if len(index) == 0 {
		index = []int{0}
	}
	msgs := d.file.Messages()
	var md protoreflect.MessageDescriptor
	for _, i := range index {
		if i < 0 || i >= msgs.Len() {
			return nil, fmt.Errorf("message index %v: no such message in the schema", index)
		}
		md = msgs.Get(i)
		msgs = md.Messages()
	}
	return md, nil
}

func (d *protoDecoder) decode(payload []byte, index []int) (rules.Fields, error) {
	md, err := d.message(index)
	if err != nil {
		return nil, err
	}
	m := dynamicpb.NewMessage(md)
	// AllowPartial skips the required-fields walk: proto3 has none, and a
	// proto2 message missing one still has fields the rules can read.
	if err := (proto.UnmarshalOptions{AllowPartial: true}).Unmarshal(payload, m); err != nil {
		return nil, err
	}
	return protoFields{m: m}, nil
}

func (d *protoDecoder) eventType(index []int) (*rules.EventType, error) {
	md, err := d.message(index)
	if err != nil {
		return nil, err
	}
	t, err := protoMessage(md)
	if err != nil {
		return nil, err
	}
	return &rules.EventType{Message: t}, nil
}

// protoFields exposes a Protobuf message to CEL as a map, converting a
// field when an expression reads it: enums are their names, Timestamp and
// Duration are CEL's, wrappers are their value, and a field with presence
// (message, optional, oneof member) that is not set is absent.
type protoFields struct {
	m protoreflect.Message
}

var (
	_ rules.Fields  = protoFields{}
	_ traits.Mapper = protoFields{}
)

func (f protoFields) field(name string) (protoreflect.FieldDescriptor, bool) {
	fd := f.m.Descriptor().Fields().ByName(protoreflect.Name(name))
	if fd == nil || (fd.HasPresence() && !f.m.Has(fd)) {
		return nil, false
	}
	return fd, true
}

func (f protoFields) StringField(name string) (string, bool) {
	fd, ok := f.field(name)
	if !ok || fd.IsList() || fd.IsMap() {
		return "", false
	}
	switch fd.Kind() {
	case protoreflect.StringKind:
		return f.m.Get(fd).String(), true
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(f.m.Get(fd).Enum()); ev != nil {
			return string(ev.Name()), true
		}
	}
	return "", false
}

func (f protoFields) TextField(name string) (string, bool) {
	if s, ok := f.StringField(name); ok {
		return s, true
	}
	fd, ok := f.field(name)
	if !ok || fd.IsList() || fd.IsMap() {
		return "", false
	}
	switch fd.Kind() {
	case protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Sint32Kind, protoreflect.Sint64Kind,
		protoreflect.Sfixed32Kind, protoreflect.Sfixed64Kind:
		return strconv.FormatInt(f.m.Get(fd).Int(), 10), true
	}
	return "", false
}

func (f protoFields) TimeField(name string) (time.Time, error) {
	fd, ok := f.field(name)
	if !ok {
		return time.Time{}, fmt.Errorf("no field %q", name)
	}
	switch v := protoValue(fd, f.m.Get(fd)).(type) {
	case types.Timestamp:
		return v.Time, nil
	case types.String:
		t, err := time.Parse(time.RFC3339Nano, string(v))
		if err != nil {
			return time.Time{}, fmt.Errorf("field %q: %w", name, err)
		}
		return t, nil
	}
	return time.Time{}, fmt.Errorf("field %q is not a timestamp", name)
}

func (f protoFields) Find(key ref.Val) (ref.Val, bool) {
	k, ok := key.(types.String)
	if !ok {
		return types.MaybeNoSuchOverloadErr(key), false
	}
	fd, ok := f.field(string(k))
	if !ok {
		return nil, false
	}
	return protoValue(fd, f.m.Get(fd)), true
}

func (f protoFields) Get(key ref.Val) ref.Val      { return rules.MapGet(f.Find, key) }
func (f protoFields) Contains(key ref.Val) ref.Val { return rules.MapContains(f.Find, key) }

// materialize builds the whole map, for the rare expression that iterates
// or compares the event as a whole.
func (f protoFields) materialize() traits.Mapper {
	m := map[ref.Val]ref.Val{}
	fields := f.m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		if v, ok := f.Find(types.String(fields.Get(i).Name())); ok {
			m[types.String(fields.Get(i).Name())] = v
		}
	}
	return types.NewRefValMap(types.DefaultTypeAdapter, m).(traits.Mapper)
}

func (f protoFields) ConvertToNative(t reflect.Type) (any, error) {
	return f.materialize().ConvertToNative(t)
}
func (f protoFields) ConvertToType(t ref.Type) ref.Val { return f.materialize().ConvertToType(t) }
func (f protoFields) Equal(other ref.Val) ref.Val      { return f.materialize().Equal(other) }
func (f protoFields) Type() ref.Type                   { return types.MapType }
func (f protoFields) Value() any                       { return f.materialize().Value() }
func (f protoFields) Iterator() traits.Iterator        { return f.materialize().Iterator() }
func (f protoFields) Size() ref.Val                    { return f.materialize().Size() }

// protoValue converts one field's value to CEL (see docs/rules.md).
func protoValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) ref.Val {
	switch {
	case fd.IsMap():
		m := map[ref.Val]ref.Val{}
		v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
			m[protoScalar(fd.MapKey(), k.Value())] = protoScalar(fd.MapValue(), mv)
			return true
		})
		return types.NewRefValMap(types.DefaultTypeAdapter, m)
	case fd.IsList():
		l := v.List()
		out := make([]ref.Val, l.Len())
		for i := range out {
			out[i] = protoScalar(fd, l.Get(i))
		}
		return types.NewRefValList(types.DefaultTypeAdapter, out)
	}
	return protoScalar(fd, v)
}

func protoScalar(fd protoreflect.FieldDescriptor, v protoreflect.Value) ref.Val {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return types.Bool(v.Bool())
	case protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Sint32Kind, protoreflect.Sint64Kind,
		protoreflect.Sfixed32Kind, protoreflect.Sfixed64Kind:
		return types.Int(v.Int())
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind:
		return types.Uint(v.Uint())
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return types.Double(v.Float())
	case protoreflect.StringKind:
		return types.String(v.String())
	case protoreflect.BytesKind:
		return types.Bytes(v.Bytes())
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return types.String(ev.Name())
		}
		return types.Int(v.Enum())
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return protoMessageValue(v.Message())
	}
	return types.NewErr("unsupported protobuf kind %s", fd.Kind())
}

func protoMessageValue(m protoreflect.Message) ref.Val {
	md := m.Descriptor()
	switch md.FullName() {
	case "google.protobuf.Timestamp":
		s, n := wkt(m, "seconds", "nanos")
		return types.Timestamp{Time: time.Unix(s, n).UTC()}
	case "google.protobuf.Duration":
		s, n := wkt(m, "seconds", "nanos")
		return types.Duration{Duration: time.Duration(s)*time.Second + time.Duration(n)}
	}
	if isWrapper(md.FullName()) {
		fd := md.Fields().ByName("value")
		return protoScalar(fd, m.Get(fd))
	}
	return protoFields{m: m}
}

func wkt(m protoreflect.Message, sec, nanos string) (int64, int64) {
	f := m.Descriptor().Fields()
	return m.Get(f.ByName(protoreflect.Name(sec))).Int(), m.Get(f.ByName(protoreflect.Name(nanos))).Int()
}

func isWrapper(n protoreflect.FullName) bool {
	switch n {
	case "google.protobuf.BoolValue", "google.protobuf.Int32Value", "google.protobuf.Int64Value",
		"google.protobuf.UInt32Value", "google.protobuf.UInt64Value", "google.protobuf.FloatValue",
		"google.protobuf.DoubleValue", "google.protobuf.StringValue", "google.protobuf.BytesValue":
		return true
	}
	return false
}
