package schema

import (
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/hamba/avro/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	// The well-known types the translated messages refer to.
	_ "google.golang.org/protobuf/types/known/durationpb"
	_ "google.golang.org/protobuf/types/known/structpb"
	_ "google.golang.org/protobuf/types/known/timestamppb"
	_ "google.golang.org/protobuf/types/known/wrapperspb"
)

// The type-check translation: a schema becomes a protobuf message whose
// fields have exactly the CEL types the decoded `event` has at run time
// (see docs/rules.md), so CEL's checker reports a misspelt field or a
// number compared with a string against the schema. Avro records and
// Protobuf messages both go through it; a Protobuf enum, for instance, is a
// string field here because the event carries its name.

// translations numbers the translated files: each has its own package, so
// two streams' types (or two versions of one) meet in one CEL environment
// without clashing names.
var translations atomic.Int64

type typeBuilder struct {
	pkg  string
	file *descriptorpb.FileDescriptorProto
	// done maps a source type's full name to its message's name, so a
	// recursive type refers to itself instead of expanding forever.
	done map[string]string
	deps map[string]bool
}

func newTypeBuilder() *typeBuilder {
	n := translations.Add(1)
	pkg := fmt.Sprintf("invmon.typed.t%d", n)
	return &typeBuilder{
		pkg: pkg,
		file: &descriptorpb.FileDescriptorProto{
			Name:    proto.String(fmt.Sprintf("invmon/typed/t%d.proto", n)),
			Package: proto.String(pkg),
			Syntax:  proto.String("proto3"),
		},
		done: map[string]string{},
		deps: map[string]bool{},
	}
}

// wellKnown is a field of a well-known type, such as a timestamp.
func (b *typeBuilder) wellKnown(f *descriptorpb.FieldDescriptorProto, name, file string) {
	f.Type = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum()
	f.TypeName = proto.String("." + name)
	b.deps[file] = true
}

func (b *typeBuilder) dyn(f *descriptorpb.FieldDescriptorProto) {
	b.wellKnown(f, "google.protobuf.Value", "google/protobuf/struct.proto")
}

func (b *typeBuilder) build(top string) (protoreflect.MessageDescriptor, error) {
	for d := range b.deps {
		b.file.Dependency = append(b.file.Dependency, d)
	}
	fd, err := protodesc.NewFile(b.file, protoregistry.GlobalFiles)
	if err != nil {
		return nil, fmt.Errorf("translate schema for type checks: %w", err)
	}
	md := fd.Messages().ByName(protoreflect.Name(top))
	if md == nil {
		return nil, fmt.Errorf("translate schema for type checks: no message %s", top)
	}
	return md, nil
}

func messageName(full string) string {
	return strings.NewReplacer(".", "_", "-", "_").Replace(full)
}

func field(name string, number int) *descriptorpb.FieldDescriptorProto {
	return &descriptorpb.FieldDescriptorProto{
		Name:   proto.String(name),
		Number: proto.Int32(int32(number)),
		Label:  descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
	}
}

// mapEntry adds the entry message of a map field to parent.
func (b *typeBuilder) mapEntry(parent *descriptorpb.DescriptorProto, f *descriptorpb.FieldDescriptorProto, value *descriptorpb.FieldDescriptorProto) {
	name := camel(f.GetName()) + "Entry"
	key := field("key", 1)
	key.Type = descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()
	value.Name, value.Number = proto.String("value"), proto.Int32(2)
	parent.NestedType = append(parent.NestedType, &descriptorpb.DescriptorProto{
		Name:    proto.String(name),
		Field:   []*descriptorpb.FieldDescriptorProto{key, value},
		Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
	})
	f.Label = descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
	f.Type = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum()
	f.TypeName = proto.String("." + b.pkg + "." + parent.GetName() + "." + name)
}

func camel(s string) string {
	var b strings.Builder
	up := true
	for _, r := range s {
		if r == '_' {
			up = true
			continue
		}
		if up {
			b.WriteString(strings.ToUpper(string(r)))
			up = false
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// --- Avro ------------------------------------------------------------------

func avroMessage(rec *avro.RecordSchema) (protoreflect.MessageDescriptor, error) {
	b := newTypeBuilder()
	name := b.avroRecord(rec)
	return b.build(name)
}

func (b *typeBuilder) avroRecord(rec *avro.RecordSchema) string {
	if n, ok := b.done[rec.FullName()]; ok {
		return n
	}
	name := messageName(rec.FullName())
	b.done[rec.FullName()] = name
	msg := &descriptorpb.DescriptorProto{Name: proto.String(name)}
	b.file.MessageType = append(b.file.MessageType, msg)
	for i, af := range rec.Fields() {
		f := field(af.Name(), i+1)
		b.avroField(msg, f, af.Type(), true)
		msg.Field = append(msg.Field, f)
	}
	return name
}

// avroField sets f's type from s; nested says whether a list or map may
// still be made of it (protobuf has no list of lists).
func (b *typeBuilder) avroField(parent *descriptorpb.DescriptorProto, f *descriptorpb.FieldDescriptorProto, s avro.Schema, nested bool) {
	s = deref(s)
	var logical avro.LogicalType
	if ls, ok := s.(avro.LogicalTypeSchema); ok && ls.Logical() != nil {
		logical = ls.Logical().Type()
	}
	set := func(t descriptorpb.FieldDescriptorProto_Type) { f.Type = t.Enum() }
	switch s := s.(type) {
	case *avro.UnionSchema:
		var members []avro.Schema
		for _, m := range s.Types() {
			if m.Type() != avro.Null {
				members = append(members, m)
			}
		}
		if len(members) == 1 {
			b.avroField(parent, f, members[0], nested)
			return
		}
		b.dyn(f)
	case *avro.RecordSchema:
		f.Type = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum()
		f.TypeName = proto.String("." + b.pkg + "." + b.avroRecord(s))
	case *avro.ArraySchema:
		if !nested {
			b.dyn(f)
			return
		}
		b.avroField(parent, f, s.Items(), false)
		if f.GetLabel() == descriptorpb.FieldDescriptorProto_LABEL_REPEATED {
			f.Label = descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
			b.dyn(f)
			return
		}
		f.Label = descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
	case *avro.MapSchema:
		if !nested {
			b.dyn(f)
			return
		}
		value := field("value", 2)
		b.avroField(parent, value, s.Values(), false)
		if value.GetLabel() == descriptorpb.FieldDescriptorProto_LABEL_REPEATED {
			value.Label = descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
			b.dyn(value)
		}
		b.mapEntry(parent, f, value)
	case *avro.EnumSchema:
		set(descriptorpb.FieldDescriptorProto_TYPE_STRING)
	default:
		switch {
		case logical == avro.TimestampMillis || logical == avro.TimestampMicros || logical == avro.LocalTimestampMillis ||
			logical == avro.LocalTimestampMicros || logical == avro.Date:
			b.wellKnown(f, "google.protobuf.Timestamp", "google/protobuf/timestamp.proto")
		case logical == avro.TimeMillis || logical == avro.TimeMicros:
			b.wellKnown(f, "google.protobuf.Duration", "google/protobuf/duration.proto")
		case logical == avro.Decimal:
			set(descriptorpb.FieldDescriptorProto_TYPE_DOUBLE)
		default:
			if t, ok := avroScalars[s.Type()]; ok {
				set(t)
			} else {
				b.dyn(f)
			}
		}
	}
}

// avroScalars maps each Avro scalar type to the field type CEL sees.
var avroScalars = map[avro.Type]descriptorpb.FieldDescriptorProto_Type{
	avro.Boolean: descriptorpb.FieldDescriptorProto_TYPE_BOOL,
	avro.Int:     descriptorpb.FieldDescriptorProto_TYPE_INT64,
	avro.Long:    descriptorpb.FieldDescriptorProto_TYPE_INT64,
	avro.Float:   descriptorpb.FieldDescriptorProto_TYPE_DOUBLE,
	avro.Double:  descriptorpb.FieldDescriptorProto_TYPE_DOUBLE,
	avro.String:  descriptorpb.FieldDescriptorProto_TYPE_STRING,
	avro.Bytes:   descriptorpb.FieldDescriptorProto_TYPE_BYTES,
	avro.Fixed:   descriptorpb.FieldDescriptorProto_TYPE_BYTES,
}

// --- Protobuf --------------------------------------------------------------

// protoScalars maps each Protobuf scalar kind to the field type CEL sees:
// every integer width widens to CEL's int or uint, enums read as their
// names.
var protoScalars = map[protoreflect.Kind]descriptorpb.FieldDescriptorProto_Type{
	protoreflect.BoolKind:     descriptorpb.FieldDescriptorProto_TYPE_BOOL,
	protoreflect.Int32Kind:    descriptorpb.FieldDescriptorProto_TYPE_INT64,
	protoreflect.Int64Kind:    descriptorpb.FieldDescriptorProto_TYPE_INT64,
	protoreflect.Sint32Kind:   descriptorpb.FieldDescriptorProto_TYPE_INT64,
	protoreflect.Sint64Kind:   descriptorpb.FieldDescriptorProto_TYPE_INT64,
	protoreflect.Sfixed32Kind: descriptorpb.FieldDescriptorProto_TYPE_INT64,
	protoreflect.Sfixed64Kind: descriptorpb.FieldDescriptorProto_TYPE_INT64,
	protoreflect.Uint32Kind:   descriptorpb.FieldDescriptorProto_TYPE_UINT64,
	protoreflect.Uint64Kind:   descriptorpb.FieldDescriptorProto_TYPE_UINT64,
	protoreflect.Fixed32Kind:  descriptorpb.FieldDescriptorProto_TYPE_UINT64,
	protoreflect.Fixed64Kind:  descriptorpb.FieldDescriptorProto_TYPE_UINT64,
	protoreflect.FloatKind:    descriptorpb.FieldDescriptorProto_TYPE_DOUBLE,
	protoreflect.DoubleKind:   descriptorpb.FieldDescriptorProto_TYPE_DOUBLE,
	protoreflect.StringKind:   descriptorpb.FieldDescriptorProto_TYPE_STRING,
	protoreflect.EnumKind:     descriptorpb.FieldDescriptorProto_TYPE_STRING,
	protoreflect.BytesKind:    descriptorpb.FieldDescriptorProto_TYPE_BYTES,
}

func protoMessage(md protoreflect.MessageDescriptor) (protoreflect.MessageDescriptor, error) {
	b := newTypeBuilder()
	name := b.protoMessage(md)
	return b.build(name)
}

func (b *typeBuilder) protoMessage(md protoreflect.MessageDescriptor) string {
	if n, ok := b.done[string(md.FullName())]; ok {
		return n
	}
	name := messageName(string(md.FullName()))
	b.done[string(md.FullName())] = name
	msg := &descriptorpb.DescriptorProto{Name: proto.String(name)}
	b.file.MessageType = append(b.file.MessageType, msg)
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		pf := fields.Get(i)
		f := field(string(pf.Name()), i+1)
		switch {
		case pf.IsMap():
			value := field("value", 2)
			b.protoKind(value, pf.MapValue())
			b.mapEntry(msg, f, value)
		default:
			b.protoKind(f, pf)
			if pf.IsList() {
				f.Label = descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
			}
		}
		msg.Field = append(msg.Field, f)
	}
	return name
}

func (b *typeBuilder) protoKind(f *descriptorpb.FieldDescriptorProto, pf protoreflect.FieldDescriptor) {
	set := func(t descriptorpb.FieldDescriptorProto_Type) { f.Type = t.Enum() }
	if t, ok := protoScalars[pf.Kind()]; ok {
		set(t)
		return
	}
	switch pf.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		m := pf.Message()
		if strings.HasPrefix(string(m.FullName()), "google.protobuf.") {
			b.wellKnown(f, string(m.FullName()), m.ParentFile().Path())
			return
		}
		f.Type = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum()
		f.TypeName = proto.String("." + b.pkg + "." + b.protoMessage(m))
	}
}
