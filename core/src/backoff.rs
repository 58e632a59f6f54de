//! How long a failing job waits before it is tried again.

/// Wait before retrying a job that failed `failures` times in a row:
/// doubling from one minute up to a one-hour cap, spread by up to +/-20%
/// (derived from the job id, so jobs that failed together retry apart).
/// A failing job is retried at the cap for ever, never dropped.
pub fn backoff_seconds(job_id: i64, failures: u32) -> i64 {
    const BASE: i64 = 60;
    const CAP: i64 = 3_600;
    let plain = BASE.saturating_mul(1i64 << failures.saturating_sub(1).min(20)).min(CAP);
    // A stable pseudo-random fraction in [-0.2, 0.2) from the job and attempt.
    let mix = (job_id as u64 ^ ((failures as u64) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let fraction = ((mix >> 11) as f64 / (1u64 << 53) as f64) * 0.4 - 0.2;
    ((plain as f64) * (1.0 + fraction)).round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_cap_with_jitter() {
        for job in [1, 2, 77, 123_456] {
            let w: Vec<i64> = (1..=10).map(|n| backoff_seconds(job, n)).collect();
            for (n, &s) in w.iter().enumerate() {
                let plain = (60i64 << n).min(3_600) as f64;
                assert!((s as f64) >= plain * 0.8 && (s as f64) <= plain * 1.2, "job {job} try {}: {s}s", n + 1);
            }
            assert!(w[9] <= 4_320, "capped at an hour (+20%)");
            assert!(backoff_seconds(job, 1_000) <= 4_320, "still retried at the cap");
        }
        // Jobs that failed together do not all retry at the same second.
        let first: std::collections::BTreeSet<i64> = (1..=20).map(|job| backoff_seconds(job, 3)).collect();
        assert!(first.len() > 10);
    }
}
