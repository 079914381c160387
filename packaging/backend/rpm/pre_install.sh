# Create the users before the files are unpacked, so that rpm can give files
# their group. The sysusers.d file is not on disk yet: its content is given
# here, and must stay identical to palisade-backend.sysusers (xtask checks).
systemd-sysusers --replace=/usr/lib/sysusers.d/palisade-backend.conf - <<'SYSUSERS'
u palisade-backend - "Palisade backend" /var/lib/palisade-backend
SYSUSERS
