-- Palisade backend schema, version 5 (SQLite): access control.
--
-- - host_groups: named sets of hosts; a host is in at most one. The group
--   names hosts and enrollment tokens carried as text become groups.
-- - roles: the four built-in roles (their permissions are defined in the
--   code, so a new release's permissions reach them) and custom roles (a
--   JSON array of permission names).
-- - role_assignments: a user holds a role for all hosts (host_group_id
--   NULL) or for the hosts of one group. users.role becomes a global
--   assignment and goes away.
-- - users may carry an external identity (provider, subject) for single
--   sign-on later.
-- - api_tokens get an owner, a role and/or explicit permissions, an
--   optional host group and expiry, and when they were last used. Tokens
--   made before this version acted as admins: they keep the admin role.

CREATE TABLE host_groups (
    id          TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    description TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL
);

INSERT INTO host_groups (id, name, description, created_at)
SELECT lower(hex(randomblob(16))), name, '', CAST(strftime('%s', 'now') AS INTEGER) * 1000
FROM (SELECT host_group AS name FROM hosts WHERE host_group IS NOT NULL
      UNION SELECT host_group FROM enrollment_tokens WHERE host_group IS NOT NULL);

ALTER TABLE hosts ADD COLUMN host_group_id TEXT REFERENCES host_groups (id) ON DELETE SET NULL;
UPDATE hosts SET host_group_id = (SELECT id FROM host_groups WHERE host_groups.name = hosts.host_group);
DROP INDEX hosts_host_group;
ALTER TABLE hosts DROP COLUMN host_group;
CREATE INDEX hosts_host_group_id ON hosts (host_group_id, hostname, id);

ALTER TABLE enrollment_tokens ADD COLUMN host_group_id TEXT REFERENCES host_groups (id) ON DELETE SET NULL;
UPDATE enrollment_tokens SET host_group_id = (SELECT id FROM host_groups WHERE host_groups.name = enrollment_tokens.host_group);
ALTER TABLE enrollment_tokens DROP COLUMN host_group;

CREATE TABLE roles (
    id          TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    description TEXT    NOT NULL DEFAULT '',
    builtin     INTEGER NOT NULL DEFAULT 0 CHECK (builtin IN (0, 1)),
    -- JSON array of permission names (custom roles only).
    permissions TEXT    NOT NULL DEFAULT '[]',
    created_at  INTEGER NOT NULL
);
INSERT INTO roles (id, name, description, builtin, permissions, created_at) VALUES
    ('admin', 'admin', 'Everything.', 1, '[]', 0),
    ('operator', 'operator', 'Sees hosts and operates them: commands, services, patch runs, scans, acknowledgements.', 1, '[]', 0),
    ('auditor', 'auditor', 'Reads everything, the audit trail included; changes nothing.', 1, '[]', 0),
    ('viewer', 'viewer', 'Sees hosts and their state.', 1, '[]', 0);

CREATE TABLE role_assignments (
    id            TEXT    PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role_id       TEXT    NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    -- NULL: for all hosts (and the backend's own resources).
    host_group_id TEXT    REFERENCES host_groups (id) ON DELETE CASCADE,
    created_at    INTEGER NOT NULL
);
CREATE UNIQUE INDEX role_assignments_unique ON role_assignments (user_id, role_id, COALESCE(host_group_id, ''));
CREATE INDEX role_assignments_role ON role_assignments (role_id);

INSERT INTO role_assignments (id, user_id, role_id, host_group_id, created_at)
SELECT lower(hex(randomblob(16))), id, role, NULL, created_at FROM users;
ALTER TABLE users DROP COLUMN role;
ALTER TABLE users ADD COLUMN external_provider TEXT;
ALTER TABLE users ADD COLUMN external_subject TEXT;
CREATE UNIQUE INDEX users_external_identity ON users (external_provider, external_subject)
    WHERE external_provider IS NOT NULL;

ALTER TABLE api_tokens ADD COLUMN user_id INTEGER REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE api_tokens ADD COLUMN role_id TEXT REFERENCES roles (id) ON DELETE SET NULL;
ALTER TABLE api_tokens ADD COLUMN permissions TEXT NOT NULL DEFAULT '[]';
ALTER TABLE api_tokens ADD COLUMN host_group_id TEXT REFERENCES host_groups (id) ON DELETE CASCADE;
ALTER TABLE api_tokens ADD COLUMN expires_at INTEGER;
ALTER TABLE api_tokens ADD COLUMN last_used_at INTEGER;
ALTER TABLE api_tokens ADD COLUMN last_used_ip TEXT;
UPDATE api_tokens SET role_id = 'admin';
CREATE INDEX api_tokens_user ON api_tokens (user_id);

-- The audit trail's filters read newest first by id within each.
CREATE INDEX audit_log_action_id ON audit_log (action, id);
CREATE INDEX audit_log_actor_id ON audit_log (actor, id);
CREATE INDEX audit_log_target_id ON audit_log (target, id);
CREATE INDEX audit_log_outcome_id ON audit_log (outcome, id);
