-- Palisade backend schema, version 12 (PostgreSQL): each host's package
-- inventory (issue 11). The agent uploads a whole inventory once, then only
-- changes (packages::inventory::Delta); the backend keeps the rows and the
-- digest of the inventory they make, and refuses a change made against
-- another digest (needs_full: the agent is asked for the whole inventory).
--
-- host_inventories: one row per host that reported an inventory.
--   seq: the record that last changed it (an older record never wins).
--   reboot_reasons: JSON array of strings; empty when none.
-- host_packages: installed packages; a host may hold several versions of
--   one name and architecture (RPM kernels).
-- host_updates: updates the package manager offers; status is pending,
--   held, deferred, kept_back or excluded. origins, advisories and cves are
--   JSON arrays of strings.

CREATE TABLE host_inventories (
    host_id          TEXT    PRIMARY KEY REFERENCES hosts (id) ON DELETE CASCADE,
    manager          TEXT    NOT NULL CHECK (manager IN ('dpkg', 'rpm')),
    digest           BYTEA   NOT NULL,
    seq              BIGINT  NOT NULL,
    collected_at     BIGINT  NOT NULL,
    lists_updated_at BIGINT,
    reboot_required  BOOLEAN NOT NULL,
    reboot_reasons   TEXT    NOT NULL,
    needs_full       BOOLEAN NOT NULL DEFAULT false
);

CREATE TABLE host_packages (
    host_id TEXT    NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    name    TEXT    NOT NULL,
    arch    TEXT    NOT NULL,
    version TEXT    NOT NULL,
    source  TEXT    NOT NULL,
    held    BOOLEAN NOT NULL,
    PRIMARY KEY (host_id, name, arch, version)
);
-- "Which hosts run openssl": by name across the fleet.
CREATE INDEX host_packages_name ON host_packages (name, host_id);

CREATE TABLE host_updates (
    host_id    TEXT    NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    arch       TEXT    NOT NULL,
    installed  TEXT    NOT NULL,
    candidate  TEXT    NOT NULL,
    security   BOOLEAN NOT NULL,
    status     TEXT    NOT NULL CHECK (status IN ('pending', 'held', 'deferred', 'kept_back', 'excluded')),
    detail     TEXT    NOT NULL,
    origins    TEXT    NOT NULL,
    advisories TEXT    NOT NULL,
    severity   TEXT    NOT NULL,
    cves       TEXT    NOT NULL,
    PRIMARY KEY (host_id, name, arch)
);
