package generators

import (
	"encoding/json"
	"iter"
	"maps"
)

// servicesShards is how many parts Services splits its services into. A
// change copies the table of parts (64 pointers) and the part its service
// is in (~16 entries at 1000 services), not every service.
const servicesShards = 64

// Services is every service's desired backends, by name: a map that is
// never written once made. A change makes a new Services that shares
// everything but the changed services' parts with the old one, so that
// synapse's state after a change costs O(the change) to build, not
// O(fleet): at 1000 services the 1000-entry map it used to build per
// change was 60 % of its allocations, and the collections they caused were
// most of its latency tail (the benchmark's p99 fell by a third with the
// collector held off). Being immutable, a Services may be kept and read
// from any goroutine (the background config writer, the status). The zero
// value is empty.
type Services struct {
	parts *[servicesShards]*servicesPart // nil: empty
	n     int
}

// servicesPart is one part of a Services; its map is never written once a
// Services holds it.
type servicesPart struct{ m map[string]Service }

// partOf is the part a service name is in: FNV-1a, which needs no
// allocation and spreads names well enough.
func partOf(name string) int {
	h := uint32(2166136261)
	for i := 0; i < len(name); i++ {
		h ^= uint32(name[i])
		h *= 16777619
	}
	return int(h % servicesShards)
}

// ServicesOf returns the services of m (which it does not keep).
func ServicesOf(m map[string]Service) Services {
	e := Services{}.Edit()
	for name, svc := range m {
		e.Set(name, svc)
	}
	return e.Done()
}

// Len is the number of services.
func (s Services) Len() int { return s.n }

// Lookup returns the named service and whether there is one.
func (s Services) Lookup(name string) (Service, bool) {
	if s.parts == nil {
		return Service{}, false
	}
	p := s.parts[partOf(name)]
	if p == nil {
		return Service{}, false
	}
	svc, ok := p.m[name]
	return svc, ok
}

// Get returns the named service (the zero Service when there is none).
func (s Services) Get(name string) Service {
	svc, _ := s.Lookup(name)
	return svc
}

// All yields every service, in no particular order.
func (s Services) All() iter.Seq2[string, Service] {
	return func(yield func(string, Service) bool) {
		if s.parts == nil {
			return
		}
		for _, p := range s.parts {
			if p == nil {
				continue
			}
			for name, svc := range p.m {
				if !yield(name, svc) {
					return
				}
			}
		}
	}
}

// With returns s with the named service set to svc.
func (s Services) With(name string, svc Service) Services {
	e := s.Edit()
	e.Set(name, svc)
	return e.Done()
}

// Without returns s without the named service.
func (s Services) Without(name string) Services {
	e := s.Edit()
	e.Delete(name)
	return e.Done()
}

// Map returns the services as a new map.
func (s Services) Map() map[string]Service {
	m := make(map[string]Service, s.n)
	for name, svc := range s.All() {
		m[name] = svc
	}
	return m
}

// Equal reports whether both hold the same services with the same
// backends. Parts they share are not looked into: comparing a state with
// the one it was made from costs O(the change).
func (s Services) Equal(o Services) bool {
	if s.n != o.n {
		return false
	}
	if s.parts == o.parts || s.n == 0 {
		return true
	}
	for i := range servicesShards {
		a, b := s.parts[i], o.parts[i]
		if a == b {
			continue
		}
		if a == nil || b == nil {
			if a == nil {
				a = b
			}
			if len(a.m) > 0 {
				return false
			}
			continue
		}
		if len(a.m) != len(b.m) {
			return false
		}
		for name, svc := range a.m {
			if osvc, ok := b.m[name]; !ok || !svc.Equal(osvc) {
				return false
			}
		}
	}
	return true
}

// MarshalJSON writes the services as a JSON object, as a map would be.
func (s Services) MarshalJSON() ([]byte, error) { return json.Marshal(s.Map()) }

// UnmarshalJSON reads a JSON object of services.
func (s *Services) UnmarshalJSON(data []byte) error {
	var m map[string]Service
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	*s = ServicesOf(m)
	return nil
}

// ServicesEditor makes a new Services from an old one: Set and Delete,
// then Done. Each part it changes is copied once, however many of its
// services change, and the old Services stays as it was.
type ServicesEditor struct {
	base   Services
	parts  *[servicesShards]*servicesPart
	copied [servicesShards]bool
	n      int
}

// Edit starts a new Services from s.
func (s Services) Edit() *ServicesEditor {
	e := &ServicesEditor{base: s, n: s.n}
	return e
}

// part returns the writable part for name, copying it (and the table of
// parts) on its first write.
func (e *ServicesEditor) part(name string) *servicesPart {
	if e.parts == nil {
		e.parts = new([servicesShards]*servicesPart)
		if e.base.parts != nil {
			*e.parts = *e.base.parts
		}
	}
	i := partOf(name)
	if !e.copied[i] {
		var old map[string]Service
		if p := e.parts[i]; p != nil {
			old = p.m
		}
		m := make(map[string]Service, len(old)+1)
		maps.Copy(m, old)
		e.parts[i], e.copied[i] = &servicesPart{m: m}, true
	}
	return e.parts[i]
}

// Set sets the named service.
func (e *ServicesEditor) Set(name string, svc Service) {
	p := e.part(name)
	if _, ok := p.m[name]; !ok {
		e.n++
	}
	p.m[name] = svc
}

// Delete removes the named service.
func (e *ServicesEditor) Delete(name string) {
	if _, ok := e.current().Lookup(name); !ok {
		return
	}
	delete(e.part(name).m, name)
	e.n--
}

// current is what the editor holds so far (for reading only).
func (e *ServicesEditor) current() Services {
	if e.parts == nil {
		return e.base
	}
	return Services{parts: e.parts, n: e.n}
}

// Done returns the new Services. The editor must not be used after it.
func (e *ServicesEditor) Done() Services {
	s := e.current()
	e.parts, e.base = nil, Services{}
	return s
}
