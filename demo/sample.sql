-- Sample schemas modelled on the mutual-fund platform and risk-assessment
-- service guides. The tables start with only a DEFAULT partition, as many
-- hand-managed tables end up: pg_upkeep moves the rows into proper partitions.

CREATE TABLE funds (
    fund_id     int PRIMARY KEY,
    scheme_name text NOT NULL,
    category    text NOT NULL
);
INSERT INTO funds
SELECT i, 'Scheme ' || i, (ARRAY['equity', 'debt', 'hybrid', 'index'])[1 + i % 4]
  FROM generate_series(1, 200) i;

-- Daily net asset values: funds x 365 rows a year.
CREATE TABLE nav_history (
    fund_id  int NOT NULL REFERENCES funds,
    nav_date date NOT NULL,
    nav      numeric(12, 4) NOT NULL,
    aum_cr   numeric(14, 2),
    PRIMARY KEY (fund_id, nav_date)
) PARTITION BY RANGE (nav_date);
CREATE TABLE nav_history_default PARTITION OF nav_history DEFAULT;
CREATE ROLE dashboard_reader;
GRANT SELECT ON nav_history TO dashboard_reader;

INSERT INTO nav_history
SELECT f, d, round((10 + f % 50 + extract(doy FROM d) / 100.0)::numeric, 4), round((random() * 5000)::numeric, 2)
  FROM generate_series(1, 200) f,
       generate_series(date '2024-01-01', current_date, interval '1 day') d;

-- Risk assessments, partitioned monthly on a timestamp (as in the guide).
CREATE TABLE risk_assessments (
    id            uuid NOT NULL DEFAULT gen_random_uuid(),
    user_id       uuid NOT NULL,
    business_name varchar(255) NOT NULL,
    country       varchar(2),
    risk_score    decimal(3, 2) NOT NULL,
    risk_level    varchar(20) NOT NULL,
    status        varchar(20) NOT NULL,
    created_at    timestamp NOT NULL,
    updated_at    timestamp NOT NULL,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE risk_assessments_default PARTITION OF risk_assessments DEFAULT;
CREATE INDEX ON risk_assessments (user_id, created_at DESC);

INSERT INTO risk_assessments (user_id, business_name, country, risk_score, risk_level, status, created_at, updated_at)
SELECT gen_random_uuid(), 'Business ' || i, (ARRAY['US', 'GB', 'IN', 'DE'])[1 + i % 4],
       round((random() * 9.99)::numeric, 2) / 10 * 10, (ARRAY['low', 'medium', 'high'])[1 + i % 3], 'completed',
       t, t
  FROM generate_series(1, 50000) i,
       LATERAL (SELECT timestamp '2025-06-01' + (random() * (now()::timestamp - timestamp '2025-06-01')) AS t) ts;

-- An audit log, partitioned yearly on a timestamptz.
CREATE TABLE audit_log (
    id        bigint GENERATED ALWAYS AS IDENTITY,
    logged_at timestamptz NOT NULL,
    actor     text NOT NULL,
    action    text NOT NULL
) PARTITION BY RANGE (logged_at);
CREATE TABLE audit_log_default PARTITION OF audit_log DEFAULT;

INSERT INTO audit_log (logged_at, actor, action)
SELECT timestamptz '2023-01-01 00:00 America/New_York' + (i * interval '17 minutes'),
       'user' || (i % 97), (ARRAY['login', 'update', 'export', 'delete'])[1 + i % 4]
  FROM generate_series(1, 100000) i
 WHERE timestamptz '2023-01-01 00:00 America/New_York' + (i * interval '17 minutes') < now();

ANALYZE;
