//! Range checks for baseline parameters, as serde `deserialize_with`
//! functions: a value out of range is an error naming its key (the registry
//! adds the key), never a clamp.

use serde::{Deserialize, Deserializer};

/// A count of at least 1.
pub fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = usize::deserialize(d)?;
    if v == 0 {
        return Err(serde::de::Error::custom("must be at least 1, found 0"));
    }
    Ok(v)
}

/// A number in [0, 1].
pub fn unit_interval<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !(0.0..=1.0).contains(&v) {
        return Err(serde::de::Error::custom(format!("must be between 0 and 1, found {v}")));
    }
    Ok(v)
}

/// A finite number >= 0.
pub fn non_negative<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !(v >= 0.0 && v.is_finite()) {
        return Err(serde::de::Error::custom(format!("must be a finite number >= 0, found {v}")));
    }
    Ok(v)
}

/// A finite number > 0.
pub fn positive<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !(v > 0.0 && v.is_finite()) {
        return Err(serde::de::Error::custom(format!("must be a finite number > 0, found {v}")));
    }
    Ok(v)
}
