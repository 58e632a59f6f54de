//! In-database tests of index health (each runs in one transaction).

#[allow(clippy::module_inception)]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// Index columns are told apart by how pg_get_indexdef() prints them:
    /// names (quoted where needed) from the catalog cache, expressions from
    /// the deparser, INCLUDE columns apart from keys.
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
