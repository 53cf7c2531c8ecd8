package haproxy

import "strings"

// serverLine is one `server` line of a backend or listen section in a
// config file: its 1-based line number, its section's name, and its fields
// (fields[0] == "server", fields[1] the server's name).
type serverLine struct {
	line    int
	backend string
	fields  []string
}

// serverLines lists the server lines of cfg's backend and listen sections
// (a section starts at an unindented line; its lines are indented), as
// render writes them and as the ids, the options and the lines a
// validation error names are read back.
func serverLines(cfg string) []serverLine {
	var out []serverLine
	section := ""
	for i, l := range strings.Split(cfg, "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		if !strings.HasPrefix(l, " ") && !strings.HasPrefix(l, "\t") {
			section = ""
			if (f[0] == "backend" || f[0] == "listen") && len(f) > 1 {
				section = f[1]
			}
			continue
		}
		if f[0] == "server" && len(f) >= 2 && section != "" {
			out = append(out, serverLine{line: i + 1, backend: section, fields: f})
		}
	}
	return out
}
