//! In-database tests of index health (each runs in one transaction).

#[allow(clippy::module_inception)]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// Index sizes come from the files, found from the index's catalog row
    /// as the index read gives it: they must be what pg_relation_size()
    /// says, for a plain and an unlogged table's indexes. (Catalog and
    /// temporary indexes are not in the figures.)
    #[pg_test]
    fn index_sizes_are_what_pg_relation_size_says() {
        Spi::run(
            "CREATE TABLE public.sz (id int PRIMARY KEY, note text); \
             INSERT INTO public.sz SELECT g, md5(g::text) FROM generate_series(1, 5000) g; \
             CREATE INDEX sz_note ON public.sz (note); \
             CREATE UNLOGGED TABLE public.szu (id int PRIMARY KEY); \
             INSERT INTO public.szu SELECT generate_series(1, 3000);",
        )
        .unwrap();
        let wrong: i64 = Spi::get_one(
            "SELECT count(*) FROM upkeep.index_health_figures() f \
               JOIN pg_namespace n ON n.nspname = f.schema \
               JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = f.index \
              WHERE f.size_bytes <> pg_relation_size(c.oid)",
        )
        .unwrap()
        .unwrap();
        assert_eq!(wrong, 0);
        let seen: i64 = Spi::get_one(
            "SELECT count(*) FROM upkeep.index_health_figures() \
              WHERE index IN ('sz_pkey', 'sz_note', 'szu_pkey') AND size_bytes > 0",
        )
        .unwrap()
        .unwrap();
        assert_eq!(seen, 3, "the indexes are in the figures, with their sizes");
    }

    /// Index columns are told apart as pg_get_indexdef() tells them: table
    /// columns (by number), expressions (by the deparser's text), INCLUDE
    /// columns apart from keys.
    #[pg_test]
    fn columns_read_like_pg_get_indexdef() {
        Spi::run(
            "SET LOCAL upkeep.unused_index_days = 0; \
             CREATE TABLE public.t (\"Odd Col\" int, b text, c int); \
             CREATE INDEX t_odd_1 ON public.t (\"Odd Col\"); \
             CREATE INDEX t_odd_2 ON public.t (\"Odd Col\"); \
             CREATE INDEX t_inc_1 ON public.t (c) INCLUDE (b); \
             CREATE INDEX t_inc_2 ON public.t (c) INCLUDE (\"Odd Col\"); \
             CREATE TABLE public.e (b text); \
             CREATE INDEX e_lower_1 ON public.e (lower(b)); \
             CREATE INDEX e_lower_2 ON public.e (lower(b)); \
             CREATE INDEX e_upper ON public.e (upper(b))",
        )
        .unwrap();
        let found: Vec<(String, String)> = Spi::connect(|c| {
            c.select(
                "SELECT index, problem FROM upkeep.index_health WHERE problem IN ('duplicate', 'redundant') ORDER BY 1",
                None,
                &[],
            )
            .unwrap()
            .map(|r| (r.get::<String>(1).unwrap().unwrap(), r.get::<String>(2).unwrap().unwrap()))
            .collect()
        });
        assert_eq!(found, [("e_lower_2".to_string(), "duplicate".to_string()), ("t_odd_2".into(), "duplicate".into())]);
    }

    /// An index that leads with a foreign key's columns serves the key: it
    /// is never called unused, and the key is not unindexed. Columns are
    /// matched by number, so a dropped column before them, a renamed
    /// column and a name that needs quoting change nothing; an index on
    /// other columns of the same names in another table serves nothing.
    #[pg_test]
    fn an_index_that_serves_a_foreign_key_is_needed() {
        Spi::run(
            "SET LOCAL upkeep.unused_index_days = 0; \
             CREATE TABLE public.fk_p (a int, b int, PRIMARY KEY (a, b)); \
             CREATE TABLE public.fk_c (gone int, \"Ref A\" int, b int, note text); \
             ALTER TABLE public.fk_c DROP COLUMN gone; \
             ALTER TABLE public.fk_c ADD FOREIGN KEY (\"Ref A\", b) REFERENCES public.fk_p; \
             CREATE INDEX fk_c_serving ON public.fk_c (b, \"Ref A\", note); \
             CREATE INDEX fk_c_note ON public.fk_c (note); \
             ALTER TABLE public.fk_c RENAME COLUMN \"Ref A\" TO \"Ref A renamed\"; \
             CREATE TABLE public.fk_other (\"Ref A renamed\" int, b int); \
             CREATE INDEX fk_other_same_names ON public.fk_other (b, \"Ref A renamed\");",
        )
        .unwrap();
        let found: Vec<(String, String)> = Spi::connect(|c| {
            c.select(
                "SELECT coalesce(index, \"table\"), problem FROM upkeep.index_health \
                  WHERE \"table\" IN ('fk_c', 'fk_other') ORDER BY 1, 2",
                None,
                &[],
            )
            .unwrap()
            .map(|r| (r.get::<String>(1).unwrap().unwrap(), r.get::<String>(2).unwrap().unwrap()))
            .collect()
        });
        assert_eq!(
            found,
            [("fk_c_note".to_string(), "unused".to_string()), ("fk_other_same_names".into(), "unused".into())]
        );
    }

    /// (index, problem) rows of the report for one table.
    #[cfg(feature = "pg18")]
    fn problems(table: &str) -> Vec<(String, String)> {
        Spi::connect(|c| {
            c.select(
                "SELECT coalesce(index, ''), problem FROM upkeep.index_health WHERE \"table\" = $1 ORDER BY 1, 2",
                None,
                &[table.into()],
            )
            .unwrap()
            .map(|r| (r.get::<String>(1).unwrap().unwrap(), r.get::<String>(2).unwrap().unwrap()))
            .collect()
        })
    }

    /// PostgreSQL 18's temporal keys (WITHOUT OVERLAPS) are GiST indexes
    /// behind a constraint: never unused, duplicate or redundant, however
    /// rarely scanned; a plain GiST index with the same definition is the
    /// duplicate, and the key is what is kept.
    #[cfg(feature = "pg18")]
    #[pg_test]
    fn a_temporal_key_is_kept_and_its_twin_is_the_duplicate() {
        Spi::run(
            "SET LOCAL upkeep.unused_index_days = 0; \
             CREATE TABLE public.bookings (room int4range, during tsrange, \
                    CONSTRAINT bookings_no_overlap PRIMARY KEY (room, during WITHOUT OVERLAPS)); \
             CREATE INDEX bookings_twin ON public.bookings USING gist (room, during)",
        )
        .unwrap();
        let found = problems("bookings");
        assert_eq!(found, vec![("bookings_twin".to_string(), "duplicate".to_string())], "{found:?}");
        let kept: String = Spi::get_one("SELECT recommendation FROM upkeep.index_health WHERE index = 'bookings_twin'")
            .unwrap()
            .unwrap();
        assert!(kept.contains("bookings_no_overlap"), "{kept}");
    }
}
