//! Embedding tables addressed through the features' encodings: items as sums
//! of (possibly hashed) rows, categorical side features as averages.

use funnel_api::{Categorical, ItemEncoding, ItemIdx};
use rand::Rng;

use crate::table::EmbeddingTable;

/// Item vectors as sums of table rows (one row each for plain IDs, several
/// shared hashed rows for a hash embedding).
pub struct ItemTable {
    pub table: EmbeddingTable,
    encoding: ItemEncoding,
}

impl ItemTable {
    pub fn normal(encoding: ItemEncoding, dim: usize, std: f32, rng: &mut impl Rng) -> ItemTable {
        ItemTable { table: EmbeddingTable::normal(encoding.rows, dim, std, rng), encoding }
    }

    pub fn dim(&self) -> usize {
        self.table.dim
    }

    /// Adds `scale` times item `item`'s vector to `out`.
    pub fn add_to(&self, item: ItemIdx, scale: f32, out: &mut [f32]) {
        for &r in self.encoding.ids(item) {
            for (o, &x) in out.iter_mut().zip(self.table.row(r)) {
                *o += scale * x;
            }
        }
    }

    /// Hints the CPU to load item `item`'s rows (see [`crate::table::prefetch`]).
    pub fn prefetch(&self, item: ItemIdx) {
        self.encoding.ids(item).iter().for_each(|&r| crate::table::prefetch(self.table.row(r)));
    }

    /// Hints the CPU to load where item `item`'s rows find their gradients.
    pub fn prefetch_slots(&self, item: ItemIdx) {
        self.encoding.ids(item).iter().for_each(|&r| self.table.prefetch_slot(r));
    }

    /// Appends item `item`'s vector to `out`.
    pub fn gather_into(&self, item: ItemIdx, out: &mut Vec<f32>) {
        let start = out.len();
        out.resize(start + self.dim(), 0.0);
        self.write(item, &mut out[start..]);
    }

    /// Writes item `item`'s vector into `out` (`dim` values).
    pub fn write(&self, item: ItemIdx, out: &mut [f32]) {
        if let [r] = self.encoding.ids(item) {
            // One row: copied, so plain IDs give exactly the table's values.
            out.copy_from_slice(self.table.row(*r));
        } else {
            out.fill(0.0);
            self.add_to(item, 1.0, out);
        }
    }

    /// Adds `scale * g` to the gradient of every row of item `item`.
    pub fn accumulate(&mut self, item: ItemIdx, g: &[f32], scale: f32) {
        for i in 0..self.encoding.per_item {
            let r = self.encoding.ids(item)[i];
            self.table.accumulate(r, g, scale);
        }
    }

    /// Every item's vector, row-major.
    pub fn vectors(&self, n_items: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(n_items * self.dim());
        (0..n_items as ItemIdx).for_each(|i| self.gather_into(i, &mut out));
        out
    }
}

/// A categorical feature's embedding table; an entity's vector is the mean of
/// its values' rows (zeros when it has none).
pub struct FieldTable {
    pub table: EmbeddingTable,
    field: Categorical,
}

impl FieldTable {
    pub fn normal(field: Categorical, dim: usize, std: f32, rng: &mut impl Rng) -> FieldTable {
        FieldTable { table: EmbeddingTable::normal(field.cardinality.max(1), dim, std, rng), field }
    }

    pub fn name(&self) -> &str {
        &self.field.name
    }

    /// Writes the mean over every value of every entity in `entities` (a bag:
    /// a history's items' genres, or one user's attribute) into `out`.
    pub fn mean_into(&self, entities: &[u32], out: &mut [f32]) {
        out.fill(0.0);
        let mut n = 0usize;
        for &e in entities {
            for &v in self.field.values(e as usize) {
                for (o, &x) in out.iter_mut().zip(self.table.row(v)) {
                    *o += x;
                }
                n += 1;
            }
        }
        if n > 0 {
            let inv = 1.0 / n as f32;
            out.iter_mut().for_each(|o| *o *= inv);
        }
    }

    /// Gradient of [`FieldTable::mean_into`] with respect to the rows it read.
    pub fn accumulate_mean(&mut self, entities: &[u32], g: &[f32]) {
        let n: usize = entities.iter().map(|&e| self.field.values(e as usize).len()).sum();
        if n == 0 {
            return;
        }
        let scale = 1.0 / n as f32;
        for &e in entities {
            for i in 0..self.field.values(e as usize).len() {
                let v = self.field.values(e as usize)[i];
                self.table.accumulate(v, g, scale);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn hashed_items_are_the_sum_of_their_rows_and_spread_gradients_to_each() {
        let rng = &mut rand::rngs::StdRng::seed_from_u64(1);
        // Item 0 -> rows 0 and 2, item 1 -> rows 2 and 2 (a collision counts twice).
        let mut t = ItemTable::normal(ItemEncoding::from_ids(3, 2, vec![0, 2, 2, 2]), 2, 1.0, rng);
        let row = |t: &ItemTable, r: u32| t.table.row(r).to_vec();
        let mut v = Vec::new();
        t.gather_into(0, &mut v);
        t.gather_into(1, &mut v);
        let (r0, r2) = (row(&t, 0), row(&t, 2));
        assert_eq!(v, vec![r0[0] + r2[0], r0[1] + r2[1], 2.0 * r2[0], 2.0 * r2[1]]);
        t.accumulate(1, &[1.0, -1.0], 0.5);
        assert_eq!(t.table.gradient(), &[0.0, 0.0, 0.0, 0.0, 1.0, -1.0]);
    }

    #[test]
    fn a_field_bag_is_the_mean_of_every_value_and_nothing_is_zero() {
        let rng = &mut rand::rngs::StdRng::seed_from_u64(2);
        let field = Categorical::from_lists("genres", 3, [vec![0, 1], vec![], vec![1]]);
        let mut f = FieldTable::normal(field, 2, 1.0, rng);
        let mut out = [0.0f32; 2];
        f.mean_into(&[0, 2], &mut out);
        let (a, b) = (f.table.row(0).to_vec(), f.table.row(1).to_vec());
        let expected = [(a[0] + 2.0 * b[0]) / 3.0, (a[1] + 2.0 * b[1]) / 3.0];
        assert!((out[0] - expected[0]).abs() < 1e-6 && (out[1] - expected[1]).abs() < 1e-6);
        f.mean_into(&[1, u32::MAX], &mut out);
        assert_eq!(out, [0.0, 0.0]);
        f.accumulate_mean(&[0, 2], &[3.0, 3.0]);
        assert_eq!(f.table.gradient(), &[1.0, 1.0, 2.0, 2.0, 0.0, 0.0]);
    }
}
