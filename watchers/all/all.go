// Package all registers every built-in discovery method with package
// watchers: import it for its side effect where configs are decoded.
package all

import (
	// Each registers its methods in its init.
	_ "github.com/syncstack/syncstack/watchers/dns"
	_ "github.com/syncstack/syncstack/watchers/file"
	_ "github.com/syncstack/syncstack/watchers/plugin"
	_ "github.com/syncstack/syncstack/watchers/registrywatch"
	_ "github.com/syncstack/syncstack/watchers/static"
)
