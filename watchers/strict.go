package watchers

import (
	"fmt"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// yaml.v3 forgets KnownFields when a custom UnmarshalYAML decodes a node
// (Node.Decode starts a lax decoder), and Config has to, since its keys
// depend on its method. checkKnown restores the strictness: it walks n
// against t and reports every key no field takes, in yaml.v3's own words,
// so a typo under discovery fails with its line as it did before.

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// fields are the yaml keys of struct type t and their types; anyKey says
// an inline map takes every other key.
func fields(t reflect.Type) (keys map[string]reflect.Type, anyKey bool) {
	keys = map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if strings.Contains(","+opts+",", ",inline,") {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Map {
				anyKey = true
				continue
			}
			sub, any := fields(ft)
			for k, v := range sub {
				keys[k] = v
			}
			anyKey = anyKey || any
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		keys[name] = f.Type
	}
	return keys, anyKey
}

// yamlKeys are the keys of struct type t.
func yamlKeys(t reflect.Type) map[string]bool {
	f, _ := fields(t)
	out := make(map[string]bool, len(f))
	for k := range f {
		out[k] = true
	}
	return out
}

// checkKnown appends to errs every key of n that type t has no field
// for. Values of a type with its own UnmarshalYAML are its business; wrong
// kinds are left to Decode, which reports them.
func checkKnown(n *yaml.Node, t reflect.Type, errs *[]string) {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n == nil {
		return
	}
	for {
		if t.Implements(unmarshalerType) || reflect.PointerTo(t).Implements(unmarshalerType) {
			return
		}
		if t.Kind() != reflect.Pointer {
			break
		}
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return
		}
		keys, anyKey := fields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			ft, ok := keys[k.Value]
			if !ok {
				if !anyKey {
					*errs = append(*errs, fmt.Sprintf("line %d: field %s not found in type %s", k.Line, k.Value, t))
				}
				continue
			}
			checkKnown(n.Content[i+1], ft, errs)
		}
	case reflect.Slice, reflect.Array:
		if n.Kind == yaml.SequenceNode {
			for _, c := range n.Content {
				checkKnown(c, t.Elem(), errs)
			}
		}
	case reflect.Map:
		if n.Kind == yaml.MappingNode {
			for i := 1; i < len(n.Content); i += 2 {
				checkKnown(n.Content[i], t.Elem(), errs)
			}
		}
	}
}
