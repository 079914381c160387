# What systemd-rpm-macros' %sysusers, %tmpfiles_create and %systemd_post do.
systemd-sysusers /usr/lib/sysusers.d/palisade-backend.conf || :
systemd-tmpfiles --create /usr/lib/tmpfiles.d/palisade-backend.conf || :
if [ $1 -eq 1 ] && [ -x /usr/bin/systemctl ]; then
    # First installation: enable the unit or not as the system's presets say.
    systemctl --no-reload preset palisade-backend.service >/dev/null 2>&1 || :
fi
