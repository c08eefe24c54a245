//! Adam (Kingma & Ba 2015) over flat `f32` buffers, dense and row-lazy.
//!
//! dfdx's optimizers need compile-time shapes; the tower's widths come from
//! TOML, so its parameters and the embedding tables are updated here.

/// Hyper-parameters and the shared step counter.
#[derive(Debug, Clone)]
pub struct Adam {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Steps taken so far (bias correction uses it).
    pub t: u64,
}

/// First and second moments of one parameter buffer.
#[derive(Debug, Clone)]
pub struct Moments {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

impl Moments {
    pub fn zeros(n: usize) -> Moments {
        Moments { m: vec![0.0; n], v: vec![0.0; n] }
    }
}

impl Adam {
    pub fn new(lr: f32) -> Adam {
        Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, t: 0 }
    }

    /// Starts a step: every update until the next call uses the same bias correction.
    pub fn begin_step(&mut self) {
        self.t += 1;
    }

    /// Updates `params` in place from `grads` (same length as the moments).
    pub fn update(&self, params: &mut [f32], grads: &[f32], moments: &mut Moments) {
        self.update_slices(params, grads, &mut moments.m, &mut moments.v);
    }

    /// [`Adam::update`] over parts of buffers (one embedding row, say).
    pub fn update_slices(&self, params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32]) {
        self.row_step().update(params, grads, m, v);
    }

    /// This step's bias-corrected coefficients, computed once for the many
    /// rows of an embedding table.
    pub fn row_step(&self) -> RowStep {
        let (b1, b2) = (self.beta1, self.beta2);
        let correction = (1.0 - b2.powi(self.t as i32)).sqrt();
        RowStep {
            beta1: b1,
            beta2: b2,
            step: self.lr * correction / (1.0 - b1.powi(self.t as i32)),
            // The bias-corrected form of Adam's update, with eps scaled to
            // match `m_hat / (sqrt(v_hat) + eps)` exactly.
            eps: self.eps * correction,
        }
    }
}

/// One step's Adam coefficients (see [`Adam::row_step`]).
#[derive(Debug, Clone)]
pub struct RowStep {
    pub beta1: f32,
    pub beta2: f32,
    pub step: f32,
    pub eps: f32,
}

impl RowStep {
    pub fn update(&self, params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has just been found to support AVX-512F.
            return unsafe { self.update_avx512(params, grads, m, v) };
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has just been found to support AVX2.
            return unsafe { self.update_avx2(params, grads, m, v) };
        }
        self.update_baseline(params, grads, m, v);
    }

    // Three compiled copies of one loop: the same IEEE operations (no fused
    // multiply-adds), four, eight or sixteen lanes at a time, identical bits. Neither is inlined into its
    // caller: the compiler vectorizes only while it knows the four slices
    // are disjoint, which it knows of a function's own `&mut` arguments.
    /// # Safety
    /// The CPU must support AVX2 (`update` checks before calling).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn update_avx2(&self, params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32]) {
        self.update_lanes(params, grads, m, v);
    }

    /// # Safety
    /// The CPU must support AVX-512F (`update` checks before calling).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn update_avx512(&self, params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32]) {
        self.update_lanes(params, grads, m, v);
    }

    #[inline(never)]
    fn update_baseline(&self, params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32]) {
        self.update_lanes(params, grads, m, v);
    }

    #[inline(always)]
    fn update_lanes(&self, params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32]) {
        let (b1, b2) = (self.beta1, self.beta2);
        for (((p, &g), m), v) in params.iter_mut().zip(grads).zip(m).zip(v) {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *p -= self.step * *m / (v.sqrt() + self.eps);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_moves_each_weight_by_lr_against_its_gradient_sign() {
        // At t = 1, m_hat = g and v_hat = g^2, so the step is lr * g / (|g| + eps).
        let mut adam = Adam::new(0.1);
        adam.begin_step();
        let mut p = vec![1.0, 1.0, 1.0];
        let mut mo = Moments::zeros(3);
        adam.update(&mut p, &[2.0, -0.5, 0.0], &mut mo);
        assert!((p[0] - 0.9).abs() < 1e-6 && (p[1] - 1.1).abs() < 1e-6 && p[2] == 1.0, "{p:?}");
    }

    #[test]
    fn every_compiled_update_gives_the_same_bits() {
        let mut adam = Adam::new(0.01);
        adam.begin_step();
        let step = adam.row_step();
        let g: Vec<f32> = (0..100).map(|i| (i as f32 - 50.0) * 0.013).collect();
        let start = || ((0..100).map(|i| i as f32 * 0.1).collect::<Vec<f32>>(), vec![0.01f32; 100], vec![0.02f32; 100]);
        let ((mut p1, mut m1, mut v1), (mut p2, mut m2, mut v2)) = (start(), start());
        step.update_baseline(&mut p1, &g, &mut m1, &mut v1);
        step.update(&mut p2, &g, &mut m2, &mut v2);
        assert_eq!((&p1, &m1, &v1), (&p2, &m2, &v2));
        #[cfg(target_arch = "x86_64")]
        for (wide, name) in [
            (std::arch::is_x86_feature_detected!("avx2"), "avx2"),
            (std::arch::is_x86_feature_detected!("avx512f"), "avx512f"),
        ] {
            if !wide {
                continue;
            }
            let (mut p3, mut m3, mut v3) = start();
            // SAFETY: the CPU supports the feature (checked just above).
            unsafe {
                match name {
                    "avx2" => step.update_avx2(&mut p3, &g, &mut m3, &mut v3),
                    _ => step.update_avx512(&mut p3, &g, &mut m3, &mut v3),
                }
            }
            assert_eq!((&p1, &m1, &v1), (&p3, &m3, &v3), "{name}");
        }
    }

    #[test]
    fn matches_the_textbook_update_over_several_steps() {
        let grads = [[0.3f32, -1.0], [0.1, 0.5], [-0.2, 0.2]];
        let mut adam = Adam::new(0.01);
        let mut p = vec![0.5f32, -0.5];
        let mut mo = Moments::zeros(2);
        let (mut m, mut v, mut q) = ([0.0f64; 2], [0.0f64; 2], [0.5f64, -0.5]);
        for (t, g) in grads.iter().enumerate() {
            adam.begin_step();
            adam.update(&mut p, g, &mut mo);
            for i in 0..2 {
                let gi = g[i] as f64;
                m[i] = 0.9 * m[i] + 0.1 * gi;
                v[i] = 0.999 * v[i] + 0.001 * gi * gi;
                let m_hat = m[i] / (1.0 - 0.9f64.powi(t as i32 + 1));
                let v_hat = v[i] / (1.0 - 0.999f64.powi(t as i32 + 1));
                q[i] -= 0.01 * m_hat / (v_hat.sqrt() + 1e-8);
            }
        }
        for i in 0..2 {
            assert!((p[i] as f64 - q[i]).abs() < 1e-6, "{p:?} vs {q:?}");
        }
    }
}
