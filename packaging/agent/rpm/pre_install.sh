# Create the users before the files are unpacked (the agent does not use them
# yet: they are for its privilege separation). The sysusers.d file is not on
# disk yet: its content is given here, and must stay identical to
# palisade-agent.sysusers (xtask checks).
systemd-sysusers --replace=/usr/lib/sysusers.d/palisade-agent.conf - <<'SYSUSERS'
u palisade-agent - "Palisade agent platform"
u palisade-collector - "Palisade agent collector"
u palisade-monitor - "Palisade agent monitor"
SYSUSERS
