-- Palisade backend schema, version 5 (PostgreSQL): access control.
-- Mirrors sqlite/0005_access_control.sql.

CREATE TABLE host_groups (
    id          TEXT   PRIMARY KEY,
    name        TEXT   NOT NULL UNIQUE,
    description TEXT   NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL
);

INSERT INTO host_groups (id, name, description, created_at)
SELECT replace(gen_random_uuid()::text, '-', ''), name, '', (extract(epoch FROM now()) * 1000)::bigint
FROM (SELECT host_group AS name FROM hosts WHERE host_group IS NOT NULL
      UNION SELECT host_group FROM enrollment_tokens WHERE host_group IS NOT NULL) AS names;

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
    builtin     BOOLEAN NOT NULL DEFAULT FALSE,
    permissions TEXT    NOT NULL DEFAULT '[]',
    created_at  BIGINT  NOT NULL
);
INSERT INTO roles (id, name, description, builtin, permissions, created_at) VALUES
    ('admin', 'admin', 'Everything.', TRUE, '[]', 0),
    ('operator', 'operator', 'Sees hosts and operates them: commands, services, patch runs, scans, acknowledgements.', TRUE, '[]', 0),
    ('auditor', 'auditor', 'Reads everything, the audit trail included; changes nothing.', TRUE, '[]', 0),
    ('viewer', 'viewer', 'Sees hosts and their state.', TRUE, '[]', 0);

CREATE TABLE role_assignments (
    id            TEXT   PRIMARY KEY,
    user_id       BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role_id       TEXT   NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    host_group_id TEXT   REFERENCES host_groups (id) ON DELETE CASCADE,
    created_at    BIGINT NOT NULL
);
CREATE UNIQUE INDEX role_assignments_unique ON role_assignments (user_id, role_id, COALESCE(host_group_id, ''));
CREATE INDEX role_assignments_role ON role_assignments (role_id);

INSERT INTO role_assignments (id, user_id, role_id, host_group_id, created_at)
SELECT replace(gen_random_uuid()::text, '-', ''), id, role, NULL, created_at FROM users;
ALTER TABLE users DROP COLUMN role;
ALTER TABLE users ADD COLUMN external_provider TEXT;
ALTER TABLE users ADD COLUMN external_subject TEXT;
CREATE UNIQUE INDEX users_external_identity ON users (external_provider, external_subject)
    WHERE external_provider IS NOT NULL;

ALTER TABLE api_tokens ADD COLUMN user_id BIGINT REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE api_tokens ADD COLUMN role_id TEXT REFERENCES roles (id) ON DELETE SET NULL;
ALTER TABLE api_tokens ADD COLUMN permissions TEXT NOT NULL DEFAULT '[]';
ALTER TABLE api_tokens ADD COLUMN host_group_id TEXT REFERENCES host_groups (id) ON DELETE CASCADE;
ALTER TABLE api_tokens ADD COLUMN expires_at BIGINT;
ALTER TABLE api_tokens ADD COLUMN last_used_at BIGINT;
ALTER TABLE api_tokens ADD COLUMN last_used_ip TEXT;
UPDATE api_tokens SET role_id = 'admin';
CREATE INDEX api_tokens_user ON api_tokens (user_id);

CREATE INDEX audit_log_action_id ON audit_log (action, id);
CREATE INDEX audit_log_actor_id ON audit_log (actor, id);
CREATE INDEX audit_log_target_id ON audit_log (target, id);
CREATE INDEX audit_log_outcome_id ON audit_log (outcome, id);
