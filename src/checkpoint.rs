//! Training checkpoints: everything needed to continue a run bit for bit,
//! written atomically (temporary file, fsync, rename) after every
//! `[train] checkpoint_every` epochs.
//!
//! Layout: `FUNNELCK` and a format byte, a little-endian u64 header length,
//! a JSON header (epoch counters, the per-epoch records, and an index of the
//! arrays), then every array's raw little-endian values in index order.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use funnel_api::{ModelState, TrainingState};
use serde::{Deserialize, Serialize};

use crate::run_folder::{self, EpochRecord};

/// File name of the checkpoint inside the run folder.
pub const FILE: &str = "checkpoint.bin";

const MAGIC: &[u8; 9] = b"FUNNELCK\x01";

#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Fingerprint of the resolved configuration it was trained with.
    pub config_hash: String,
    /// Last completed epoch (1-based).
    pub epoch: usize,
    pub records: Vec<EpochRecord>,
    pub best_epoch: usize,
    pub best_score: f64,
    pub best_state: ModelState,
    pub model: TrainingState,
    pub sampler: TrainingState,
}

#[derive(Serialize, Deserialize)]
struct Header {
    config_hash: String,
    epoch: usize,
    records: Vec<EpochRecord>,
    best_epoch: usize,
    best_score: f64,
    arrays: Vec<ArrayIndex>,
}

#[derive(Serialize, Deserialize)]
struct ArrayIndex {
    /// `best`, `model` or `sampler`.
    section: String,
    name: String,
    /// `f32`, `f64` or `u64`.
    kind: String,
    len: usize,
}

/// The arrays of a checkpoint in file order, as (section, name, kind, bytes).
fn arrays(c: &Checkpoint) -> Vec<(&'static str, &str, &'static str, Vec<u8>)> {
    fn bytes<T: Copy, const N: usize>(v: &[T], to: fn(T) -> [u8; N]) -> Vec<u8> {
        v.iter().flat_map(|&x| to(x)).collect()
    }
    let mut out = Vec::new();
    for (k, v) in &c.best_state {
        out.push(("best", k.as_str(), "f32", bytes(v, f32::to_le_bytes)));
    }
    for (section, state) in [("model", &c.model), ("sampler", &c.sampler)] {
        for (k, v) in &state.f32s {
            out.push((section, k.as_str(), "f32", bytes(v, f32::to_le_bytes)));
        }
        for (k, v) in &state.f64s {
            out.push((section, k.as_str(), "f64", bytes(v, f64::to_le_bytes)));
        }
        for (k, v) in &state.u64s {
            out.push((section, k.as_str(), "u64", bytes(v, u64::to_le_bytes)));
        }
    }
    out
}

/// Writes `c` to `path` atomically: a crash leaves the previous checkpoint.
pub fn write(path: &Path, c: &Checkpoint) -> Result<()> {
    let arrays = arrays(c);
    let header = Header {
        config_hash: c.config_hash.clone(),
        epoch: c.epoch,
        records: c.records.clone(),
        best_epoch: c.best_epoch,
        best_score: c.best_score,
        arrays: arrays
            .iter()
            .map(|(section, name, kind, bytes)| ArrayIndex {
                section: section.to_string(),
                name: name.to_string(),
                kind: kind.to_string(),
                len: bytes.len() / if *kind == "f32" { 4 } else { 8 },
            })
            .collect(),
    };
    let header = serde_json::to_vec(&header)?;
    run_folder::write_with(path, |file| {
        let mut f = std::io::BufWriter::new(file);
        f.write_all(MAGIC)?;
        f.write_all(&(header.len() as u64).to_le_bytes())?;
        f.write_all(&header)?;
        for (_, _, _, bytes) in &arrays {
            f.write_all(bytes)?;
        }
        f.flush()?;
        Ok(())
    })
}

pub fn read(path: &Path) -> Result<Checkpoint> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .with_context(|| format!("reading {}", path.display()))?;
    parse(&bytes).with_context(|| format!("{} is not a valid checkpoint", path.display()))
}

fn parse(bytes: &[u8]) -> Result<Checkpoint> {
    ensure!(bytes.len() >= MAGIC.len() + 8 && bytes.starts_with(MAGIC), "wrong magic bytes");
    let mut at = MAGIC.len();
    let header_len = u64::from_le_bytes(bytes[at..at + 8].try_into()?) as usize;
    at += 8;
    ensure!(bytes.len() >= at + header_len, "truncated header");
    let header: Header = serde_json::from_slice(&bytes[at..at + header_len])?;
    at += header_len;
    let mut c = Checkpoint {
        config_hash: header.config_hash,
        epoch: header.epoch,
        records: header.records,
        best_epoch: header.best_epoch,
        best_score: header.best_score,
        best_state: BTreeMap::new(),
        model: TrainingState::default(),
        sampler: TrainingState::default(),
    };
    for a in header.arrays {
        let width = match a.kind.as_str() {
            "f32" => 4,
            "f64" | "u64" => 8,
            other => bail!("unknown array type `{other}`"),
        };
        let end = at + a.len * width;
        ensure!(bytes.len() >= end, "truncated array `{}`", a.name);
        let data = &bytes[at..end];
        at = end;
        let state = match a.section.as_str() {
            "best" => None,
            "model" => Some(&mut c.model),
            "sampler" => Some(&mut c.sampler),
            other => bail!("unknown section `{other}`"),
        };
        match (a.kind.as_str(), state) {
            ("f32", None) => {
                c.best_state
                    .insert(a.name, data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect());
            }
            ("f32", Some(s)) => {
                s.f32s
                    .insert(a.name, data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect());
            }
            ("f64", Some(s)) => {
                s.f64s
                    .insert(a.name, data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect());
            }
            ("u64", Some(s)) => {
                s.u64s
                    .insert(a.name, data.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().unwrap())).collect());
            }
            (kind, None) => bail!("best-epoch state holds `{kind}` values"),
            _ => unreachable!("kinds are checked above"),
        }
    }
    ensure!(at == bytes.len(), "{} trailing bytes", bytes.len() - at);
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use funnel_api::Metrics;

    fn sample() -> Checkpoint {
        let mut model = TrainingState::default();
        model.f32s.insert("w".into(), vec![1.5, -0.0, f32::MIN_POSITIVE]);
        model.u64s.insert("adam.t".into(), vec![u64::MAX]);
        let mut sampler = TrainingState::default();
        sampler.f64s.insert("gap".into(), vec![0.1, 1e300]);
        Checkpoint {
            config_hash: "abc".into(),
            epoch: 3,
            records: vec![EpochRecord {
                epoch: 1,
                loss: 2.5,
                train_seconds: 1.0,
                examples_per_second: 10.0,
                validation_seconds: 0.5,
                validation: Metrics::from([("recall@10".to_string(), 0.125)]),
            }],
            best_epoch: 1,
            best_score: 0.125,
            best_state: ModelState::from([("w".to_string(), vec![2.0, 3.0])]),
            model,
            sampler,
        }
    }

    #[test]
    fn round_trips_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        write(&path, &sample()).unwrap();
        assert_eq!(read(&path).unwrap(), sample());
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn damaged_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        write(&path, &sample()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        for cut in [0, 5, 12, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let err = read(&path).unwrap_err();
            assert!(format!("{err:#}").contains("not a valid checkpoint"), "{err:#}");
        }
    }
}
