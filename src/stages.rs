//! Wall time and peak memory of each stage of a run, so a run at a new scale
//! shows where its time and memory went (`metrics.json` `stages`, the
//! report, and `cargo xtask bench scale`).

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// One stage as measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageTime {
    pub name: String,
    pub seconds: f64,
    /// The process's peak resident memory during the stage (Linux; `None`
    /// where the kernel does not tell).
    pub peak_rss_bytes: Option<u64>,
}

/// Measures stages one after another.
#[derive(Debug, Default)]
pub struct StageClock {
    pub stages: Vec<StageTime>,
}

impl StageClock {
    /// Runs `f` as the stage `name`.
    pub fn time<R>(&mut self, name: &str, f: impl FnOnce() -> R) -> R {
        reset_peak_rss();
        let started = Instant::now();
        let out = f();
        self.record(name, started.elapsed().as_secs_f64());
        out
    }

    /// Records a stage measured elsewhere (the training loop times its own
    /// epochs), with the peak memory since the last reset.
    pub fn record(&mut self, name: &str, seconds: f64) {
        self.stages.push(StageTime { name: name.to_string(), seconds, peak_rss_bytes: peak_rss_bytes() });
        reset_peak_rss();
    }

    /// Seconds of every stage whose name starts with `prefix`.
    pub fn seconds(&self, prefix: &str) -> f64 {
        self.stages.iter().filter(|s| s.name.starts_with(prefix)).map(|s| s.seconds).sum()
    }
}

/// Starts a new peak-memory window (Linux: `5` into `clear_refs` resets the
/// high-water mark to the current resident size).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak resident memory since the last reset, from `VmHWM`.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_timed_in_order_with_their_memory() {
        let mut clock = StageClock::default();
        let v = clock.time("load", || {
            let big = vec![1u8; 64 << 20];
            big.iter().map(|&b| b as u64).sum::<u64>()
        });
        assert_eq!(v, 64 << 20);
        clock.time("small", || ());
        clock.record("epoch 1", 2.5);
        let names: Vec<&str> = clock.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["load", "small", "epoch 1"]);
        assert_eq!(clock.seconds("epoch"), 2.5);
        if let Some(load) = clock.stages[0].peak_rss_bytes {
            assert!(load >= 64 << 20, "the 64 MiB buffer was resident during load: {load}");
        }
    }
}
