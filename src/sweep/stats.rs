//! Paired significance tests over users: is configuration A's per-user metric
//! really higher than B's, or is the difference noise?

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
    (z, erfc(z.abs() / std::f64::consts::SQRT_2).min(1.0))
}

/// Two-sided p-value of Student's t with `df` degrees of freedom:
/// I_{df/(df+t^2)}(df/2, 1/2).
fn student_t_two_sided(t: f64, df: f64) -> f64 {
    incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
}

/// Complementary error function (Numerical Recipes' Chebyshev fit,
/// fractional error below 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// Regularized incomplete beta I_x(a, b) by Lentz's continued fraction.
fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front = (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_fraction(b, a, 1.0 - x) / b
    }
}

fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// ln Γ(x) (Lanczos, g = 7, n = 9).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
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
        assert!(close(erfc(1.96 / std::f64::consts::SQRT_2), 0.049_995_790_296_440_87, 1e-7));
        assert!(close(ln_gamma(5.0), 24f64.ln(), 1e-12));
        assert!(close(ln_gamma(0.5), std::f64::consts::PI.sqrt().ln(), 1e-12));
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
