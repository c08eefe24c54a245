//! Similarity of small sets (an item's categories).

/// The Jaccard index `|a ∩ b| / |a ∪ b|` of two sets without repeats; 0
/// when both are empty (nothing in common to speak of).
pub fn jaccard(a: &[u32], b: &[u32]) -> f64 {
    let common = a.iter().filter(|c| b.contains(c)).count();
    let union = a.len() + b.len() - common;
    if union == 0 {
        0.0
    } else {
        common as f64 / union as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaccard_by_hand() {
        assert_eq!(jaccard(&[0, 1], &[1]), 0.5);
        assert_eq!(jaccard(&[0, 1], &[2]), 0.0);
        assert_eq!(jaccard(&[2, 0], &[0, 2]), 1.0);
        assert_eq!(jaccard(&[], &[]), 0.0);
    }
}
