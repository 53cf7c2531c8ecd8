#!/bin/sh
# On purge of the last syncstack package: remove the state and the user.
set -e
if [ "$1" = "purge" ]; then
	if ! dpkg-query -W -f='${Status}\n' syncstack-nerve syncstack-synapse 2>/dev/null | grep -q "install ok installed"; then
		rm -rf /var/lib/syncstack
		if getent passwd syncstack >/dev/null; then deluser --system syncstack >/dev/null 2>&1 || true; fi
		if getent group syncstack >/dev/null; then delgroup --system syncstack >/dev/null 2>&1 || true; fi
	fi
fi
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
