# What %systemd_postun_with_restart does: reload units; after an upgrade,
# restart the service if it was running.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ $1 -ge 1 ]; then
        systemctl try-restart palisade-backend.service >/dev/null 2>&1 || :
    fi
fi
