# What %systemd_preun does: on removal (not upgrade), stop and disable.
if [ $1 -eq 0 ] && [ -x /usr/bin/systemctl ]; then
    systemctl --no-reload disable --now palisade-backend.service >/dev/null 2>&1 || :
fi
