package watchers

import (
	"fmt"

	"gopkg.in/yaml.v3"

	"github.com/syncstack/syncstack/registry"
)

// Server is an instance record, or just a host name (Airbnb's dns watcher
// takes a list of names): the `servers` key of the static and dns methods.
type Server struct{ registry.Instance }

// UnmarshalYAML implements yaml.Unmarshaler.
func (s *Server) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		s.Host = n.Value
		return nil
	}
	type plain registry.Instance
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	s.Instance = registry.Instance(p)
	return nil
}

// Instances returns the servers' records; portOverride fills a missing port.
func Instances(servers []Server, portOverride int) []registry.Instance {
	out := make([]registry.Instance, len(servers))
	for i, s := range servers {
		out[i] = s.Clone()
		if out[i].Port == 0 {
			out[i].Port = portOverride
		}
	}
	return out
}

// CheckServers validates servers under key "servers". A server with no
// port (nor server_port_override) is a problem, or, with portless, a
// warning.
func CheckServers(c *Check, servers []Server, portless bool) {
	for i, s := range Instances(servers, c.PortOverride) {
		k := fmt.Sprintf("servers[%d]", i)
		if s.Port == 0 {
			if portless {
				c.Warn(k, "no port (and no haproxy.server_port_override): the addresses of %s are not used until one is set", s.Host)
				continue
			}
			c.Problem(k+".port", "missing (or set haproxy.server_port_override)")
			continue
		}
		if err := s.Validate(); err != nil {
			c.Problem(k, "%v", err)
		}
	}
}
