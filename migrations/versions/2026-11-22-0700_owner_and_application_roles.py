"""Owner and application roles: the application can append to the break audit trail, never
rewrite it, and cannot switch its append-only trigger off.

Revision ID: e3a8f1c06b27
Revises: 9d41c2e7a6b0
Create Date: 2026-11-22 07:00:00

A table's owner may disable its triggers, so the append-only trigger only binds a role that does
not own `break_audit`: the application must log in as a role that owns nothing. Hence two
cluster-wide roles, both NOLOGIN:
- `recon_app` (grant it to the application's login role): SELECT, INSERT, UPDATE, DELETE on every
  table, except `break_audit` (SELECT, INSERT) and `alembic_version` (SELECT); USAGE on the
  sequences; EXECUTE on `ensure_partitions`. Tables that later migrations (run by the same
  role) create get the same grants.
- `recon_owner` owns the schema's tables, views and functions (day partitions included) when the
  migrating role may hand them over (a superuser, or a member of `recon_owner`). A migrating role
  that may not (e.g. a database owner without CREATEROLE) keeps them, with a warning; that is as
  safe provided the application logs in as another role.
- `ensure_partitions` must own the parent tables it partitions, so it becomes SECURITY DEFINER as
  their owner, with a fixed search_path and EXECUTE for `recon_app` only (not PUBLIC).
A later migration that creates a partitioned table must give it to the same owner (`ALTER TABLE
... OWNER TO recon_owner`), or `ensure_partitions` cannot partition it and says so.

Roles are cluster-wide and other databases may use them, so downgrade gives this database's
objects back to the migrating role, revokes the grants, and leaves the roles.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "e3a8f1c06b27"
down_revision: str | Sequence[str] | None = "9d41c2e7a6b0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Alembic's bookkeeping stays the migrator's; APScheduler's job store creates and owns its table.
# Indexes and the sequences of serial columns follow their table.
RELATIONS = """
SELECT c.relname,
       CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                      WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END AS kind
FROM pg_class AS c
WHERE c.relnamespace = current_schema()::regnamespace
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND c.relname NOT IN ('alembic_version', 'apscheduler_jobs')
"""

APP_TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"


def create_role(role: str) -> str:
    return f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
        CREATE ROLE {role} NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    -- Another database of the cluster created it at the same moment.
    NULL;
END $$
"""


HAND_OVER_TO_OWNER = f"""
DO $$
DECLARE
    s text := quote_ident(current_schema());
    rel record;
BEGIN
    IF NOT pg_has_role('recon_owner', 'MEMBER') THEN
        RAISE WARNING '% keeps owning this schema''s tables: only a superuser or a member of '
            'recon_owner can hand them over. The application must not log in as %.',
            current_user, current_user;
        RETURN;
    END IF;
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %s TO recon_owner', s);
    FOR rel IN {RELATIONS} ORDER BY c.relname LOOP
        EXECUTE format('ALTER %s %I OWNER TO recon_owner', rel.kind, rel.relname);
    END LOOP;
    ALTER FUNCTION ensure_partitions(date) OWNER TO recon_owner;
    ALTER FUNCTION break_audit_append_only() OWNER TO recon_owner;
    -- recon_owner creates the day partitions: analysts could read them directly, and still can.
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES FOR ROLE recon_owner IN SCHEMA %s'
        ' GRANT SELECT ON TABLES TO recon_readonly', s
    );
END $$
"""

GRANT_APP = f"""
DO $$
DECLARE
    s text := quote_ident(current_schema());
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %s TO recon_app', s);
    EXECUTE format('GRANT {APP_TABLE_PRIVILEGES} ON ALL TABLES IN SCHEMA %s TO recon_app', s);
    EXECUTE format('GRANT USAGE ON ALL SEQUENCES IN SCHEMA %s TO recon_app', s);
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES IN SCHEMA %s'
        ' GRANT {APP_TABLE_PRIVILEGES} ON TABLES TO recon_app', s
    );
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES IN SCHEMA %s GRANT USAGE ON SEQUENCES TO recon_app', s
    );
    REVOKE UPDATE, DELETE, TRUNCATE ON break_audit FROM recon_app;
    REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON alembic_version FROM recon_app;
    -- pg_catalog is searched first all the same; pg_temp last, so no temporary object shadows.
    EXECUTE format(
        'ALTER FUNCTION ensure_partitions(date) SECURITY DEFINER SET search_path = %s, pg_temp', s
    );
    REVOKE EXECUTE ON FUNCTION ensure_partitions(date) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION ensure_partitions(date) TO recon_app;
END $$
"""

REVOKE_APP = f"""
DO $$
DECLARE
    s text := quote_ident(current_schema());
BEGIN
    ALTER FUNCTION ensure_partitions(date) SECURITY INVOKER RESET search_path;
    REVOKE EXECUTE ON FUNCTION ensure_partitions(date) FROM recon_app;
    GRANT EXECUTE ON FUNCTION ensure_partitions(date) TO PUBLIC;
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES IN SCHEMA %s REVOKE USAGE ON SEQUENCES FROM recon_app', s
    );
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES IN SCHEMA %s'
        ' REVOKE {APP_TABLE_PRIVILEGES} ON TABLES FROM recon_app', s
    );
    EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA %s FROM recon_app', s);
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %s FROM recon_app', s);
    EXECUTE format('REVOKE ALL ON SCHEMA %s FROM recon_app', s);
END $$
"""

# Whatever recon_owner owns here goes back to the migrating role (a no-op if it kept them).
TAKE_BACK_FROM_OWNER = f"""
DO $$
DECLARE
    s text := quote_ident(current_schema());
    rel record;
BEGIN
    FOR rel IN {RELATIONS} AND c.relowner = 'recon_owner'::regrole ORDER BY c.relname LOOP
        EXECUTE format('ALTER %s %I OWNER TO %I', rel.kind, rel.relname, current_user);
    END LOOP;
    EXECUTE format('ALTER FUNCTION ensure_partitions(date) OWNER TO %I', current_user);
    EXECUTE format('ALTER FUNCTION break_audit_append_only() OWNER TO %I', current_user);
    IF pg_has_role('recon_owner', 'MEMBER') THEN
        EXECUTE format(
            'ALTER DEFAULT PRIVILEGES FOR ROLE recon_owner IN SCHEMA %s'
            ' REVOKE SELECT ON TABLES FROM recon_readonly', s
        );
        EXECUTE format('REVOKE ALL ON SCHEMA %s FROM recon_owner', s);
    END IF;
END $$
"""


def upgrade() -> None:
    for role in ("recon_owner", "recon_app"):
        op.execute(create_role(role))
    op.execute(HAND_OVER_TO_OWNER)
    op.execute(GRANT_APP)


def downgrade() -> None:
    op.execute(REVOKE_APP)
    op.execute(TAKE_BACK_FROM_OWNER)
