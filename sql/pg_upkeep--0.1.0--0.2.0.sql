-- pg_upkeep 0.1.0 -> 0.2.0 (ALTER EXTENSION pg_upkeep UPDATE). Runs with
-- search_path set to the extension's schema. What 0.2.0 adds:
-- upkeep.version(), to tell the SQL objects' version from the library's;
-- upkeep.report_html(), the HTML dashboard.
-- A fresh 0.2.0 install and an upgraded 0.1.0 have the same objects
-- (pgrx-tests/tests/upgrade.rs compares them).

CREATE FUNCTION upkeep."version"() RETURNS TABLE (
	"installed" TEXT,
	"library" TEXT,
	"up_to_date" bool
)
STRICT STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'version_wrapper';
COMMENT ON FUNCTION upkeep.version() IS
  'The version of pg_upkeep''s SQL objects in this database and of the library the server loaded; up_to_date is false after a package upgrade until ALTER EXTENSION pg_upkeep UPDATE.';

CREATE FUNCTION upkeep."report_html"() RETURNS TEXT
STRICT STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'report_html_wrapper';
COMMENT ON FUNCTION upkeep.report_html() IS
  'One self-contained HTML page (no script, nothing from the network): jobs, a partition calendar per managed table, archive and refresh status, index health, with inline SVG charts. Save it and open it: psql -Atc "SELECT upkeep.report_html()" > report.html';
