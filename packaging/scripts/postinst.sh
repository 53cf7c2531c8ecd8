#!/bin/sh
# Creates the syncstack system user and its state directory; idempotent
# (every syncstack package runs it).
set -e
if ! getent group syncstack >/dev/null; then
	addgroup --system syncstack >/dev/null
fi
install -d -m 0750 /var/lib/syncstack
if ! getent passwd syncstack >/dev/null; then
	adduser --system --ingroup syncstack --home /var/lib/syncstack --no-create-home \
		--shell /usr/sbin/nologin --gecos "syncstack (nerve, synapse)" syncstack >/dev/null
fi
chown syncstack:syncstack /var/lib/syncstack
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
