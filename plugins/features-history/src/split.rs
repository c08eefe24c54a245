//! `split`: which positions of each user's time-ordered sequence are
//! training examples, and which are the validation and test targets.

use anyhow::{bail, Result};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use funnel_api::Example;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

/// How examples are split; the report names the protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Split {
    /// Each user's last positive is the test target, the one before it the
    /// validation target, every earlier one (after the first) a training target.
    LeaveLastOut {},
    /// One global cutoff for each held-out set (leakage-free: nothing at or
    /// after `validation_start` is trained on). Each user's first positive in
    /// [`validation_start`, `test_start`) is their validation target, their
    /// first at or after `test_start` their test target; users with none
    /// (or with no earlier history) are left out of that set and counted.
    Temporal {
        /// A date ("2003-01-01", "2003-01-01 12:00:00", RFC 3339; UTC) or a
        /// quantile of all timestamps in (0, 1).
        test_start: Cutoff,
        /// As `test_start`, and not after it.
        validation_start: Cutoff,
    },
    /// Per user, a seeded random `fraction` of the positives after the first
    /// (at least two) is held out: one is the validation target, the others
    /// are test targets. The rest, in time order, are the training sequence;
    /// the validation target follows it, and every test target is asked
    /// from that same history (the other test targets are not excluded
    /// from its ranking).
    RandomHoldout {
        /// Share of each user's positives held out, in (0, 1).
        #[serde(default = "default_fraction")]
        fraction: f64,
    },
}

fn default_fraction() -> f64 {
    0.2
}

/// A point in time, written as a date or as a quantile of the data's timestamps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Cutoff {
    Quantile(f64),
    Date(String),
}

impl Cutoff {
    /// Seconds since the epoch; `sorted` holds every timestamp of the data.
    fn resolve(&self, key: &str, sorted: &[i64]) -> Result<i64> {
        match self {
            Cutoff::Quantile(q) if *q > 0.0 && *q < 1.0 && !sorted.is_empty() => {
                Ok(sorted[((sorted.len() - 1) as f64 * q).round() as usize])
            }
            Cutoff::Quantile(q) => bail!("key `split.{key}`: a quantile must be in (0, 1), found {q}"),
            Cutoff::Date(s) => parse_date(s).ok_or_else(|| {
                anyhow::anyhow!(
                    "key `split.{key}`: \"{s}\" is not a date; write \"2003-01-01\", \"2003-01-01 12:00:00\" or RFC 3339"
                )
            }),
        }
    }
}

fn parse_date(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp())
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").map(|t| t.and_utc().timestamp()))
        .or_else(|_| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp())
        })
        .ok()
}

impl Split {
    /// What can be checked before the data is read.
    pub fn validate(&self) -> Result<()> {
        if let Split::RandomHoldout { fraction } = self {
            if !(*fraction > 0.0 && *fraction < 1.0) {
                bail!("key `split.fraction`: must be in (0, 1), found {fraction}");
            }
        }
        if let Split::Temporal { test_start, validation_start } = self {
            for (key, c) in [("test_start", test_start), ("validation_start", validation_start)] {
                match c {
                    Cutoff::Quantile(q) if !(*q > 0.0 && *q < 1.0) => {
                        bail!("key `split.{key}`: a quantile must be in (0, 1), found {q}")
                    }
                    Cutoff::Date(s) if parse_date(s).is_none() => {
                        bail!("key `split.{key}`: \"{s}\" is not a date; write \"2003-01-01\", \"2003-01-01 12:00:00\" or RFC 3339")
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// The examples of one split, and the protocol in words for the report.
pub struct Assigned {
    pub train: Vec<Vec<u32>>,
    pub validation: Vec<Example>,
    pub test: Vec<Example>,
    pub protocol: String,
}

/// Splits `sequences` (time-ordered, with `times` and, when the dataset has
/// outcomes, `outcomes`; else that is empty); may reorder a user's sequence
/// (random holdout moves the held-out positives last), and its times and
/// outcomes with it.
pub fn assign(
    split: &Split,
    sequences: &mut [Vec<u32>],
    times: &mut [Vec<i64>],
    outcomes: &mut [Vec<u32>],
    rng: &mut StdRng,
) -> Result<Assigned> {
    let n_users = sequences.len();
    let mut out = Assigned {
        train: vec![Vec::new(); n_users],
        validation: Vec::new(),
        test: Vec::new(),
        protocol: String::new(),
    };
    match split {
        Split::LeaveLastOut {} => {
            for (user, seq) in sequences.iter().enumerate() {
                let n = seq.len() as u32;
                if n >= 2 {
                    out.test.push(Example { user: user as u32, position: n - 1, ahead: 0 });
                }
                if n >= 3 {
                    out.validation.push(Example { user: user as u32, position: n - 2, ahead: 0 });
                }
                out.train[user] = (1..n.saturating_sub(2)).collect();
            }
            out.protocol = "leave last out: each user's last positive is the test target, the one before it the \
                            validation target"
                .to_string();
        }
        Split::RandomHoldout { fraction } => {
            for (user, (seq, ts)) in sequences.iter_mut().zip(times.iter_mut()).enumerate() {
                let n = seq.len();
                let user = user as u32;
                if n < 3 {
                    if n == 2 {
                        out.test.push(Example { user, position: 1, ahead: 0 });
                    }
                    continue;
                }
                // Positions after the first, a seeded `fraction` of them (at least two).
                let k = ((fraction * (n - 1) as f64).round() as usize).clamp(2, n - 1);
                let held = rand::seq::index::sample(rng, n - 1, k).into_iter().map(|i| i + 1).collect::<Vec<_>>();
                let mut is_held = vec![false; n];
                for &i in &held {
                    is_held[i] = true;
                }
                let order: Vec<usize> = (0..n).filter(|&i| !is_held[i]).chain(held.iter().copied()).collect();
                *seq = order.iter().map(|&i| seq[i]).collect();
                *ts = order.iter().map(|&i| ts[i]).collect();
                if let Some(masks) = outcomes.get_mut(user as usize) {
                    *masks = order.iter().map(|&i| masks[i]).collect();
                }
                let first_held = (n - k) as u32;
                out.train[user as usize] = (1..first_held).collect();
                out.validation.push(Example { user, position: first_held, ahead: 0 });
                out.test.extend((0..k as u32 - 1).map(|ahead| Example { user, position: first_held + 1, ahead }));
            }
            out.protocol = format!(
                "random holdout: per user, a seeded {:.0} % of the positives after the first (at least two) held \
                 out; one is the validation target, each other a test target asked from the user's remaining \
                 positives and the validation target",
                fraction * 100.0
            );
        }
        Split::Temporal { test_start, validation_start } => {
            let mut sorted: Vec<i64> = times.iter().flatten().copied().collect();
            sorted.sort_unstable();
            let t_test = test_start.resolve("test_start", &sorted)?;
            let t_val = validation_start.resolve("validation_start", &sorted)?;
            if t_val > t_test {
                bail!("key `split.validation_start`: must not be after `test_start` ({t_val} > {t_test} seconds)");
            }
            let (mut no_test, mut no_validation) = (0usize, 0usize);
            for (user, ts) in times.iter().enumerate() {
                let user_u32 = user as u32;
                // Positions are time-ordered: training is a prefix.
                let first_val = ts.partition_point(|&t| t < t_val);
                let first_test = ts.partition_point(|&t| t < t_test);
                out.train[user] = (1..first_val as u32).collect();
                if first_val < first_test && first_val >= 1 {
                    out.validation.push(Example { user: user_u32, position: first_val as u32, ahead: 0 });
                } else {
                    no_validation += 1;
                }
                if first_test < ts.len() && first_test >= 1 {
                    out.test.push(Example { user: user_u32, position: first_test as u32, ahead: 0 });
                } else {
                    no_test += 1;
                }
            }
            let date = |t: i64| {
                DateTime::from_timestamp(t, 0)
                    .map_or_else(|| t.to_string(), |d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            };
            out.protocol = format!(
                "temporal: trained on positives before {}; validation targets are each user's first positive from \
                 then until {}, test targets their first after it; {no_validation} of {n_users} users have no \
                 validation target and {no_test} no test target (nothing in the window, or no earlier history), \
                 and are left out of that evaluation",
                date(t_val),
                date(t_test)
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn run(split: &Split, seqs: &[&[(u32, i64)]]) -> (Assigned, Vec<Vec<u32>>) {
        let mut sequences: Vec<Vec<u32>> = seqs.iter().map(|s| s.iter().map(|p| p.0).collect()).collect();
        let mut times: Vec<Vec<i64>> = seqs.iter().map(|s| s.iter().map(|p| p.1).collect()).collect();
        let a = assign(split, &mut sequences, &mut times, &mut [], &mut StdRng::seed_from_u64(1)).unwrap();
        (a, sequences)
    }

    #[test]
    fn leave_last_out_by_hand() {
        let (a, _) = run(&Split::LeaveLastOut {}, &[&[(1, 1), (2, 2), (3, 3), (4, 4)], &[(5, 1), (6, 2)]]);
        assert_eq!(a.train, [vec![1], vec![]]);
        assert_eq!(a.validation, [Example { user: 0, position: 2, ahead: 0 }]);
        assert_eq!(a.test, [Example { user: 0, position: 3, ahead: 0 }, Example { user: 1, position: 1, ahead: 0 }]);
    }

    #[test]
    fn temporal_cutoffs_by_hand() {
        let split = Split::Temporal {
            test_start: Cutoff::Quantile(0.75),
            validation_start: Cutoff::Date("1970-01-01 00:00:05".into()),
        };
        // Times 1..=8 and 2, 9, 9; the 0.75 quantile of the 11 sorted is index 8: 8.
        let (a, _) = run(
            &split,
            &[
                &[(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6), (7, 7), (8, 8)],
                // Ties at the test cutoff: the first in file order is the target.
                &[(9, 2), (10, 9), (11, 9)],
            ],
        );
        // User 0: training targets before t=5 at positions 1..=3; validation
        // at the first t >= 5 (position 4), test at the first t >= 8 (7).
        assert_eq!(a.train[0], [1, 2, 3]);
        assert_eq!(a.validation, [Example { user: 0, position: 4, ahead: 0 }]);
        // User 1 has nothing in [5, 8): no validation; test at position 1.
        assert_eq!(a.test, [Example { user: 0, position: 7, ahead: 0 }, Example { user: 1, position: 1, ahead: 0 }]);
        assert!(a.protocol.contains("1 of 2 users have no validation target and 0 no test target"), "{}", a.protocol);
        // A user whose first positive is after the cutoff has no history: left out.
        let (a, _) = run(&split, &[&[(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6), (7, 7), (8, 8)], &[(9, 9)]]);
        assert_eq!(a.test.len(), 1);
        assert!(a.protocol.contains("1 no test target"), "{}", a.protocol);
    }

    #[test]
    fn temporal_cutoffs_in_the_wrong_order_or_bad_are_errors() {
        let split = Split::Temporal { test_start: Cutoff::Quantile(0.5), validation_start: Cutoff::Quantile(0.9) };
        let mut s = vec![vec![1, 2, 3]];
        let mut t = vec![vec![1, 2, 3]];
        let e = assign(&split, &mut s, &mut t, &mut [], &mut StdRng::seed_from_u64(1)).err().unwrap().to_string();
        assert!(e.contains("validation_start") && e.contains("after"), "{e}");
        let bad =
            Split::Temporal { test_start: Cutoff::Quantile(1.5), validation_start: Cutoff::Date("yesterday".into()) };
        assert!(bad.validate().unwrap_err().to_string().contains("split.test_start"));
    }

    #[test]
    fn random_holdout_holds_out_a_seeded_fraction_last() {
        let seq: Vec<(u32, i64)> = (0..11).map(|i| (i, i as i64)).collect();
        let split = Split::RandomHoldout { fraction: 0.3 };
        let (a, seqs) = run(&split, &[&seq, &[(20, 1), (21, 2)]]);
        let s = &seqs[0];
        assert_eq!(s[0], 0, "the first positive stays first");
        let mut sorted = s.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..11).collect::<Vec<_>>(), "a permutation");
        // round(0.3 x 10) = 3 held out: positions 8, 9, 10; the rest keep time order.
        assert!(s[..8].windows(2).all(|w| w[0] < w[1]), "{s:?}");
        assert_eq!(a.train[0], (1..8).collect::<Vec<_>>());
        assert_eq!(a.validation, [Example { user: 0, position: 8, ahead: 0 }]);
        assert_eq!(
            a.test,
            [
                Example { user: 0, position: 9, ahead: 0 },
                Example { user: 0, position: 9, ahead: 1 },
                Example { user: 1, position: 1, ahead: 0 }
            ]
        );
        // Seeded: the same seed holds out the same positives.
        let (_, again) = run(&split, &[&seq]);
        assert_eq!(again[0], seqs[0]);
        // At least two are held out, however small the fraction.
        let (a, _) = run(&Split::RandomHoldout { fraction: 0.01 }, &[&seq]);
        assert_eq!((a.validation.len(), a.test.len()), (1, 1));
        // Over many users every later position is held out about equally often.
        let users: Vec<Vec<(u32, i64)>> = (0..3000).map(|_| seq.clone()).collect();
        let refs: Vec<&[(u32, i64)]> = users.iter().map(Vec::as_slice).collect();
        let (_, out) = run(&split, &refs);
        let mut counts = [0usize; 11];
        for s in &out {
            for &item in &s[8..] {
                counts[item as usize] += 1;
            }
        }
        // 3000 x 3 / 10 = 900 expected per later position.
        assert_eq!(counts[0], 0);
        assert!(counts[1..].iter().all(|&c| (780..=1020).contains(&c)), "{counts:?}");
        assert!(Split::RandomHoldout { fraction: 1.0 }.validate().unwrap_err().to_string().contains("split.fraction"));
    }

    #[test]
    fn random_holdout_moves_times_and_outcomes_with_their_items() {
        // Item i at time 10 i with outcomes i + 100, so each stays recognisable.
        let mut sequences = vec![(0..11).collect::<Vec<u32>>()];
        let mut times = vec![(0..11).map(|i| 10 * i).collect::<Vec<i64>>()];
        let mut outcomes = vec![(0..11).map(|i| i + 100).collect::<Vec<u32>>()];
        let split = Split::RandomHoldout { fraction: 0.3 };
        assign(&split, &mut sequences, &mut times, &mut outcomes, &mut StdRng::seed_from_u64(1)).unwrap();
        assert_ne!(sequences[0], (0..11).collect::<Vec<_>>(), "held-out items moved last");
        for (k, &item) in sequences[0].iter().enumerate() {
            assert_eq!((times[0][k], outcomes[0][k]), (10 * i64::from(item), item + 100));
        }
    }
}
