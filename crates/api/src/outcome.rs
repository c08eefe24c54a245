//! Outcomes: what a row of a dataset says happened (a like, a purchase, a
//! dislike), declared as rules over the row's columns.
//!
//! Datasets share one rule language so an experiment file reads the same
//! whatever plugin loads the data: `"<column> <op> <value>"`, with `op` one
//! of `>=`, `>`, `<=`, `<`, `==`, `!=`. A number compares numerically; any
//! other value (optionally in double quotes) compares as text, with `==` or
//! `!=` only.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{bail, Result};

/// At most this many outcomes: a row's outcomes are the bits of a `u32`.
pub const MAX_OUTCOMES: usize = 32;

/// How a rule compares a cell with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    AtLeast,
    Above,
    AtMost,
    Below,
    Equal,
    NotEqual,
}

impl Comparison {
    /// Longest first, so `>=` is not read as `>`.
    const SPELLINGS: [(&'static str, Comparison); 6] = [
        (">=", Comparison::AtLeast),
        ("<=", Comparison::AtMost),
        ("==", Comparison::Equal),
        ("!=", Comparison::NotEqual),
        (">", Comparison::Above),
        ("<", Comparison::Below),
    ];

    fn symbol(self) -> &'static str {
        Self::SPELLINGS.iter().find(|(_, c)| *c == self).map(|(s, _)| *s).expect("every comparison is spelled")
    }
}

/// What a rule compares with.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleValue {
    Number(f64),
    Text(String),
}

/// One rule over a row: `column op value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub column: String,
    pub comparison: Comparison,
    pub value: RuleValue,
}

impl Rule {
    /// Parses `"rating >= 4"`, `"event == purchase"`, `"event == \"add to cart\""`.
    ///
    /// # Errors
    /// Saying what was expected, quoting `text`.
    pub fn parse(text: &str) -> Result<Rule> {
        let expected = "expected \"<column> <op> <value>\" with op one of >=, >, <=, <, ==, != (e.g. \"rating >= 4\")";
        let Some((at, symbol, comparison)) = Comparison::SPELLINGS
            .iter()
            .filter_map(|&(s, c)| text.find(s).map(|at| (at, s, c)))
            .min_by_key(|&(at, s, _)| (at, std::cmp::Reverse(s.len())))
        else {
            bail!("rule \"{text}\": {expected}");
        };
        let column = text[..at].trim();
        let raw = text[at + symbol.len()..].trim();
        if column.is_empty() || raw.is_empty() {
            bail!("rule \"{text}\": {expected}");
        }
        let value = match raw.parse::<f64>() {
            Ok(v) if v.is_finite() => RuleValue::Number(v),
            _ => {
                let unquoted = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')).unwrap_or(raw);
                if !matches!(comparison, Comparison::Equal | Comparison::NotEqual) {
                    bail!("rule \"{text}\": `{}` compares numbers, and \"{unquoted}\" is not one", comparison.symbol());
                }
                RuleValue::Text(unquoted.to_string())
            }
        };
        Ok(Rule { column: column.to_string(), comparison, value })
    }

    /// Whether a cell holding `x` meets the rule. A text rule compares `x`
    /// as the text it would be written as.
    pub fn matches_number(&self, x: f64) -> bool {
        match &self.value {
            RuleValue::Number(v) => compare(x.partial_cmp(v), self.comparison),
            RuleValue::Text(_) => self.matches_text(&format_number(x)),
        }
    }

    /// Whether a cell holding `s` meets the rule; a number rule reads `s` as a
    /// number (text that is not one never meets it).
    pub fn matches_text(&self, s: &str) -> bool {
        match &self.value {
            RuleValue::Number(_) => s.trim().parse::<f64>().is_ok_and(|x| self.matches_number(x)),
            RuleValue::Text(t) => match self.comparison {
                Comparison::Equal => s == t,
                Comparison::NotEqual => s != t,
                _ => false,
            },
        }
    }

    /// Whether the rule reads its column as a number.
    pub fn is_numeric(&self) -> bool {
        matches!(self.value, RuleValue::Number(_))
    }
}

fn format_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        x.to_string()
    }
}

fn compare(ord: Option<std::cmp::Ordering>, c: Comparison) -> bool {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let Some(ord) = ord else { return false };
    match c {
        Comparison::AtLeast => ord != Less,
        Comparison::Above => ord == Greater,
        Comparison::AtMost => ord != Greater,
        Comparison::Below => ord == Less,
        Comparison::Equal => ord == Equal,
        Comparison::NotEqual => ord != Equal,
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            RuleValue::Number(v) => write!(f, "{} {} {v}", self.column, self.comparison.symbol()),
            RuleValue::Text(t) => write!(f, "{} {} \"{t}\"", self.column, self.comparison.symbol()),
        }
    }
}

/// A dataset's outcome rules and its negative-feedback rule, parsed and
/// checked against the columns the dataset can read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutcomeRules {
    /// Outcome names in order (bit `i` of a row's mask is `outcomes[i]`), with their rules.
    pub outcomes: Vec<(String, Rule)>,
    /// Rows meeting this (and no outcome) are explicit negative feedback.
    pub negative: Option<Rule>,
}

impl OutcomeRules {
    /// Parses `[dataset] outcomes` (name -> rule) and `negative_feedback`;
    /// `columns` are the columns rules may read (`None`: any, checked when
    /// the data is read).
    ///
    /// # Errors
    /// Naming the key (`outcomes.<name>` or `negative_feedback`) and what was expected.
    pub fn parse(
        outcomes: &BTreeMap<String, String>,
        negative: Option<&str>,
        columns: Option<&[&str]>,
    ) -> Result<OutcomeRules> {
        if outcomes.len() > MAX_OUTCOMES {
            bail!("key `outcomes`: at most {MAX_OUTCOMES} outcomes, found {}", outcomes.len());
        }
        let check = |key: &str, text: &str| -> Result<Rule> {
            let rule = Rule::parse(text).map_err(|e| anyhow::anyhow!("key `{key}`: {e}"))?;
            if let Some(columns) = columns {
                if !columns.contains(&rule.column.as_str()) {
                    bail!(
                        "key `{key}`: the rule reads column `{}`, which this dataset does not have (it has {})",
                        rule.column,
                        columns.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
                    );
                }
            }
            Ok(rule)
        };
        let mut parsed = Vec::new();
        for (name, text) in outcomes {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                bail!("key `outcomes`: outcome name \"{name}\" must be letters, digits, `_` or `-`");
            }
            if name == "mean" {
                bail!("key `outcomes`: \"mean\" names the average over outcomes; call the outcome something else");
            }
            parsed.push((name.clone(), check(&format!("outcomes.{name}"), text)?));
        }
        let negative = negative.map(|text| check("negative_feedback", text)).transpose()?;
        Ok(OutcomeRules { outcomes: parsed, negative })
    }

    pub fn names(&self) -> Vec<String> {
        self.outcomes.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Whether the dataset declares outcomes (else every kept row is a
    /// positive of the one implicit outcome).
    pub fn declared(&self) -> bool {
        !self.outcomes.is_empty()
    }

    /// Every column a rule reads, each once, in first-use order.
    pub fn columns(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for rule in self.outcomes.iter().map(|(_, r)| r).chain(&self.negative) {
            if !out.contains(&rule.column.as_str()) {
                out.push(&rule.column);
            }
        }
        out
    }

    /// What a row is, from a lookup of its cells by column: the mask of the
    /// outcomes it meets, and whether it is negative feedback (only when it
    /// meets no outcome).
    pub fn classify(&self, mut meets: impl FnMut(&Rule) -> bool) -> (u32, bool) {
        let mut mask = 0u32;
        for (bit, (_, rule)) in self.outcomes.iter().enumerate() {
            if meets(rule) {
                mask |= 1 << bit;
            }
        }
        let negative = mask == 0 && self.negative.as_ref().is_some_and(&mut meets);
        (mask, negative)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_compare_numbers_and_text() {
        let r = Rule::parse("rating >= 4").unwrap();
        assert_eq!((r.column.as_str(), r.comparison), ("rating", Comparison::AtLeast));
        assert!(r.matches_number(4.0) && r.matches_number(5.0) && !r.matches_number(3.5));
        assert!(r.matches_text("4") && !r.matches_text("three"));
        assert!(Rule::parse("rating<=2").unwrap().matches_number(2.0));
        assert!(!Rule::parse("rating < 2").unwrap().matches_number(2.0));
        assert!(Rule::parse("rating > 2").unwrap().matches_number(2.5));
        assert!(Rule::parse("rating != 3").unwrap().matches_number(2.0));
        let e = Rule::parse("event == purchase").unwrap();
        assert!(e.matches_text("purchase") && !e.matches_text("click"));
        let q = Rule::parse("event == \"add to cart\"").unwrap();
        assert!(q.matches_text("add to cart"));
        assert_eq!(q.to_string(), "event == \"add to cart\"");
        assert!(Rule::parse("event != click").unwrap().matches_text("purchase"));
        assert!(Rule::parse("stars == 5").unwrap().matches_text("5.0"));
    }

    #[test]
    fn bad_rules_say_what_was_expected() {
        for bad in ["rating", ">= 4", "rating >=", "rating ~ 4"] {
            let e = Rule::parse(bad).unwrap_err().to_string();
            assert!(e.contains("expected \"<column> <op> <value>\""), "{bad}: {e}");
        }
        let e = Rule::parse("event >= click").unwrap_err().to_string();
        assert!(e.contains("compares numbers"), "{e}");
    }

    #[test]
    fn rule_sets_name_the_key_and_classify_rows() {
        let outcomes: BTreeMap<String, String> =
            [("liked", "rating >= 4"), ("loved", "rating >= 5")].map(|(a, b)| (a.into(), b.into())).into();
        let rules = OutcomeRules::parse(&outcomes, Some("rating <= 2"), Some(&["rating"])).unwrap();
        assert_eq!(rules.names(), ["liked", "loved"]);
        assert_eq!(rules.columns(), ["rating"]);
        let of = |x: f64| rules.classify(|r| r.matches_number(x));
        assert_eq!(of(5.0), (0b11, false));
        assert_eq!(of(4.0), (0b01, false));
        assert_eq!(of(3.0), (0, false));
        assert_eq!(of(1.0), (0, true));

        let mut bad = outcomes.clone();
        bad.insert("saved".into(), "stars >= 4".into());
        let e = OutcomeRules::parse(&bad, None, Some(&["rating"])).unwrap_err().to_string();
        assert!(e.starts_with("key `outcomes.saved`: the rule reads column `stars`"), "{e}");
        let e = OutcomeRules::parse(&outcomes, Some("rating"), None).unwrap_err().to_string();
        assert!(e.starts_with("key `negative_feedback`: rule \"rating\""), "{e}");
        let mean: BTreeMap<String, String> = [("mean".to_string(), "rating >= 4".to_string())].into();
        assert!(OutcomeRules::parse(&mean, None, None).is_err());
    }
}
