//! What a rating row is: a positive with its outcomes, explicit negative
//! feedback, or neither. MovieLens rates in half stars, so each is decided
//! once and looked up per row: the ratings parsers stay a table lookup away
//! from the plain `rating >= min_rating` they were.

use funnel_api::OutcomeRules;

/// What a rating says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// A positive meeting these outcomes (0 when none are declared).
    Positive(u32),
    /// Explicit negative feedback.
    Feedback,
    Dropped,
}

/// Ratings half stars apart from 0 to 10 are looked up.
const HALF_STARS: usize = 21;

#[derive(Debug, Clone)]
pub(crate) struct Classifier {
    min_rating: f32,
    rules: OutcomeRules,
    /// The class of rating `i / 2` at `i`.
    half_stars: [Class; HALF_STARS],
}

impl Classifier {
    /// With outcomes declared, a rating meeting one is a positive and
    /// `min_rating` is not used; without, a rating >= `min_rating` is. A
    /// rating that is no positive but meets the negative rule is feedback.
    pub fn new(min_rating: f32, rules: OutcomeRules) -> Classifier {
        let mut c = Classifier { min_rating, rules, half_stars: [Class::Dropped; HALF_STARS] };
        c.half_stars = std::array::from_fn(|i| c.rule(i as f32 / 2.0));
        c
    }

    /// Ratings >= `min_rating` are positives, the rest are dropped.
    #[cfg(test)]
    pub fn threshold(min_rating: f32) -> Classifier {
        Classifier::new(min_rating, OutcomeRules::default())
    }

    /// The threshold, when it alone decides (no rules declared).
    pub fn threshold_only(&self) -> Option<f32> {
        (!self.rules.declared() && self.rules.negative.is_none()).then_some(self.min_rating)
    }

    #[inline]
    pub fn classify(&self, rating: f32) -> Class {
        let twice = rating * 2.0;
        // `as` saturates (NaN to 0); the comparison keeps exact half stars only.
        let i = twice as usize;
        if i < HALF_STARS && i as f32 == twice {
            self.half_stars[i]
        } else {
            self.rule(rating)
        }
    }

    fn rule(&self, rating: f32) -> Class {
        let (mask, negative) = self.rules.classify(|r| r.matches_number(f64::from(rating)));
        let positive = if self.rules.declared() { mask != 0 } else { rating >= self.min_rating };
        match (positive, negative) {
            (true, _) => Class::Positive(mask),
            (false, true) => Class::Feedback,
            (false, false) => Class::Dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn half_stars_and_other_ratings_agree_with_the_rules() {
        let t = Classifier::threshold(3.7);
        assert_eq!(
            [t.classify(3.5), t.classify(4.0), t.classify(3.7), t.classify(3.69)],
            [Class::Dropped, Class::Positive(0), Class::Positive(0), Class::Dropped]
        );
        assert_eq!([t.classify(11.0), t.classify(-1.0)], [Class::Positive(0), Class::Dropped]);
        assert_eq!(t.threshold_only(), Some(3.7));

        let outcomes: BTreeMap<String, String> =
            [("liked", "rating >= 4"), ("loved", "rating >= 5")].map(|(a, b)| (a.into(), b.into())).into();
        let rules = OutcomeRules::parse(&outcomes, Some("rating <= 2"), Some(&["rating"])).unwrap();
        // min_rating is not used once outcomes are declared.
        let c = Classifier::new(1.0, rules);
        let classes: Vec<Class> = [5.0, 4.5, 4.0, 3.0, 2.5, 2.0, 0.5, 4.25, 1.99].map(|r| c.classify(r)).to_vec();
        assert_eq!(
            classes,
            [
                Class::Positive(0b11),
                Class::Positive(0b01),
                Class::Positive(0b01),
                Class::Dropped,
                Class::Dropped,
                Class::Feedback,
                Class::Feedback,
                Class::Positive(0b01),
                Class::Feedback
            ]
        );

        // A negative rule alone: positives by the threshold.
        let negative = OutcomeRules::parse(&BTreeMap::new(), Some("rating < 2"), Some(&["rating"])).unwrap();
        let c = Classifier::new(4.0, negative);
        assert_eq!(c.threshold_only(), None);
        assert_eq!(
            [c.classify(4.0), c.classify(3.0), c.classify(1.5)],
            [Class::Positive(0), Class::Dropped, Class::Feedback]
        );
    }
}
