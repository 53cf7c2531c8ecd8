// Package secretfile guards the files that hold credentials (a password, a
// private key): one that others on the host can read or replace is
// somebody else's identity too, so it is refused, with an error naming the
// file and what to run, before the credential is ever used.
package secretfile

import (
	"fmt"
	"io/fs"
	"os"
)

// ErrExposed is wrapped by the error of a credential file others can read
// or write.
var ErrExposed = fmt.Errorf("credential file readable or writable by others")

// unsafeBits are the permission bits a credential file must not have:
// any access for others, write for the group. Group read stays allowed,
// so a key owned by root:syncstack with mode 0640 works.
const unsafeBits fs.FileMode = 0o007 | 0o020

// Check refuses a credential file whose mode lets others read or write it
// (or its group write it). The file must exist and be a regular file (a
// symlink is followed: what counts is the file read).
func Check(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("credential file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("credential file %s is not a regular file (%v)", path, fi.Mode().Type())
	}
	if perm := fi.Mode().Perm(); perm&unsafeBits != 0 {
		return fmt.Errorf("%w: %s has mode %04o; run chmod o-rwx,g-w %s (0600 or 0640)", ErrExposed, path, perm, path)
	}
	return nil
}

// Read checks the file as Check does, then reads it.
func Read(path string) ([]byte, error) {
	if err := Check(path); err != nil {
		return nil, err
	}
	return os.ReadFile(path)
}
