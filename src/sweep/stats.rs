//! Paired significance tests over users: is configuration A's per-user metric
//! really higher than B's, or is the difference noise? The ranking of the
//! signed-rank test is ours; the t and normal tails are statrs'.

use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

/// Result of a paired test of `x` against `y`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedTest {
    /// Pairs compared.
    pub n: usize,
    /// Mean of `x - y`.
    pub mean_difference: f64,
    /// Paired t statistic and its two-sided p-value (Student t, n - 1 df).
    pub t: f64,
    pub t_p: f64,
    /// Wilcoxon signed-rank: z of the smaller rank sum (zeros dropped, tie
    /// and continuity corrected, normal approximation) and its two-sided p.
    pub wilcoxon_z: f64,
    pub wilcoxon_p: f64,
}

/// Paired t test and Wilcoxon signed-rank test of `x` against `y` (equal
/// lengths, at least two pairs). Matches scipy's `ttest_rel` and
/// `wilcoxon(zero_method="wilcox", correction=True, method="approx")`.
pub fn paired(x: &[f64], y: &[f64]) -> Option<PairedTest> {
    if x.len() != y.len() || x.len() < 2 {
        return None;
    }
    let d: Vec<f64> = x.iter().zip(y).map(|(a, b)| a - b).collect();
    let n = d.len();
    let mean = d.iter().sum::<f64>() / n as f64;
    let var = d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let (t, t_p) = if var > 0.0 {
        let t = mean / (var / n as f64).sqrt();
        (t, student_t_two_sided(t, (n - 1) as f64))
    } else if mean == 0.0 {
        (0.0, 1.0)
    } else {
        (f64::INFINITY.copysign(mean), 0.0)
    };
    let (wilcoxon_z, wilcoxon_p) = wilcoxon(&d);
    Some(PairedTest { n, mean_difference: mean, t, t_p, wilcoxon_z, wilcoxon_p })
}

fn wilcoxon(d: &[f64]) -> (f64, f64) {
    let mut nonzero: Vec<f64> = d.iter().copied().filter(|v| *v != 0.0).collect();
    let count = nonzero.len();
    if count == 0 {
        return (0.0, 1.0);
    }
    nonzero.sort_by(|a, b| a.abs().total_cmp(&b.abs()));
    // Average ranks of tied |d|, and the tie correction sum(t^3 - t).
    let (mut r_plus, mut r_minus, mut ties) = (0.0, 0.0, 0.0);
    let mut i = 0;
    while i < count {
        let mut j = i;
        while j + 1 < count && nonzero[j + 1].abs() == nonzero[i].abs() {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for v in &nonzero[i..=j] {
            if *v > 0.0 {
                r_plus += rank;
            } else {
                r_minus += rank;
            }
        }
        let t = (j - i + 1) as f64;
        ties += t * t * t - t;
        i = j + 1;
    }
    let c = count as f64;
    let statistic = f64::min(r_plus, r_minus);
    let mean = c * (c + 1.0) / 4.0;
    let sd = ((c * (c + 1.0) * (2.0 * c + 1.0) - ties / 2.0) / 24.0).sqrt();
    if sd == 0.0 {
        return (0.0, 1.0);
    }
    let correction = 0.5 * (statistic - mean).signum();
    let z = (statistic - mean - correction) / sd;
    (z, normal_two_sided(z))
}

/// Two-sided p-value of Student's t with `df` degrees of freedom.
fn student_t_two_sided(t: f64, df: f64) -> f64 {
    match StudentsT::new(0.0, 1.0, df) {
        Ok(dist) => (2.0 * dist.sf(t.abs())).min(1.0),
        Err(_) => f64::NAN,
    }
}

/// Two-sided p-value of a standard normal `z`.
fn normal_two_sided(z: f64) -> f64 {
    (2.0 * Normal::standard().sf(z.abs())).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// Reference values from scipy 1.x: ttest_rel(x, y) and
    /// wilcoxon(x, y, zero_method="wilcox", correction=True, method="approx").
    #[test]
    fn matches_scipy_on_a_hand_checked_sample() {
        let x = [0.5, 1., 0., 1., 0.25, 0., 1., 0.75, 0., 1., 1., 0.5];
        let y = [0., 1., 0., 0.5, 0., 0., 1., 0., 0.25, 0.5, 0., 0.];
        let r = paired(&x, &y).unwrap();
        assert_eq!(r.n, 12);
        assert!(close(r.mean_difference, 3.75 / 12.0, 1e-12));
        assert!(close(r.t, 2.916_359_826_766_110_6, 1e-9), "{r:?}");
        assert!(close(r.t_p, 0.014_028_527_870_706_483, 1e-7), "{r:?}");
        assert!(close(r.wilcoxon_p, 0.023_130_334_984_060_45, 1e-6), "{r:?}");
        // The smaller rank sum is 1.5 (one negative difference, rank 1.5 of
        // eight non-zero |d| with ties).
        assert!(r.wilcoxon_z < 0.0);
    }

    #[test]
    fn distributions_match_known_quantiles() {
        assert!(close(student_t_two_sided(2.0, 5.0), 0.101_939_478_829_858_35, 1e-8));
        assert!(close(student_t_two_sided(-2.0, 5.0), 0.101_939_478_829_858_35, 1e-8));
        assert!(close(normal_two_sided(1.96), 0.049_995_790_296_440_87, 1e-9));
    }

    #[test]
    fn identical_and_degenerate_samples() {
        let x = [0.1, 0.2, 0.3];
        let r = paired(&x, &x).unwrap();
        assert_eq!((r.t, r.t_p, r.wilcoxon_p), (0.0, 1.0, 1.0));
        let shifted: Vec<f64> = x.iter().map(|v| v + 1.0).collect();
        let r = paired(&shifted, &x).unwrap();
        assert_eq!(r.t_p, 0.0);
        assert!(paired(&[1.0], &[0.0]).is_none());
        assert!(paired(&[1.0, 2.0], &[0.0]).is_none());
    }
}
