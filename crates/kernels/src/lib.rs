//! The numeric kernels shared by funnel's core and its plugins, each written
//! once: the inner product ([`dot`]), the checked sgemm wrapper ([`gemm`]), the product
//! in dfdx's summation order on AVX-512 ([`chained_gemm`]),
//! the best-first order and bounded top-k selection ([`better`], [`TopK`]),
//! exact maximum-inner-product top-k by blocked GEMM ([`exact_top_k`]), the
//! Jaccard index of category sets ([`jaccard`]), and the parallel loops
//! ([`par`]).
//!
//! It registers no component, so it lives outside `plugins/`; `funnel-api`
//! stays free of numeric libraries and this crate is where they enter.

mod chained;
mod exact;
mod linalg;
pub mod par;
mod sets;
mod topk;

pub use chained::{chained_gemm, chained_gemm_runs};
pub use exact::{exact_top_k, ExactTopK, NanScore};
pub use linalg::{dot, gemm, sum_of_squares, Strides, ROW_MAJOR};
pub use sets::jaccard;
pub use topk::{better, TopK};
