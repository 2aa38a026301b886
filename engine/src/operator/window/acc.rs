//! Mergeable partial aggregates of one window input, and the result columns built from them.
//!
//! One [`Acc`] per input column (or `count_if` condition) per pane, session or count pane.
//! Everything it keeps merges exactly: counts, sums, extremes, first/last by event time,
//! Welford moments (merged with Chan's formula, so `stddev` over many panes is as accurate
//! as over one), distinct-value hashes and, for `percentile`/`median`, the values themselves
//! (an exact percentile is not mergeable from less). The costlier parts are kept only when an
//! aggregate of the rule needs them.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Builder, Int64Builder};
use rustc_hash::FxHashSet;

use super::state::AccRecord;
use crate::plan::{AggFunc, Aggregate};
use crate::time::Millis;

/// What the aggregates reading one input need kept beyond counts, sums and extremes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Needs {
    pub distinct: bool,
    pub moments: bool,
    pub values: bool,
}

impl Needs {
    pub fn of(func: AggFunc) -> Needs {
        Needs {
            distinct: func == AggFunc::CountDistinct,
            moments: func == AggFunc::Stddev,
            values: func == AggFunc::Percentile,
        }
    }

    pub fn union(self, o: Needs) -> Needs {
        Needs {
            distinct: self.distinct | o.distinct,
            moments: self.moments | o.moments,
            values: self.values | o.values,
        }
    }
}

/// Mergeable partial aggregate of one input.
#[derive(Debug, Clone)]
pub(super) struct Acc {
    pub n: u64,
    sum: f64,
    min: f64,
    max: f64,
    first: (Millis, f64),
    last: (Millis, f64),
    /// Welford running mean and sum of squared deviations (only with `moments`).
    mean: f64,
    m2: f64,
    moments: bool,
    pub distinct: Option<FxHashSet<u64>>,
    values: Option<Vec<f64>>,
}

impl Acc {
    pub fn new(needs: Needs) -> Self {
        Acc {
            n: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            first: (Millis::MAX, 0.0),
            last: (Millis::MIN, 0.0),
            mean: 0.0,
            m2: 0.0,
            moments: needs.moments,
            distinct: needs.distinct.then(FxHashSet::default),
            values: needs.values.then(Vec::new),
        }
    }

    pub fn needs(&self) -> Needs {
        Needs { distinct: self.distinct.is_some(), moments: self.moments, values: self.values.is_some() }
    }

    #[inline]
    pub fn add(&mut self, t: Millis, v: f64) {
        self.n += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        // Ties keep the earliest-arriving first and the latest-arriving last.
        if t < self.first.0 {
            self.first = (t, v);
        }
        if t >= self.last.0 {
            self.last = (t, v);
        }
        if self.moments {
            let delta = v - self.mean;
            self.mean += delta / self.n as f64;
            self.m2 += delta * (v - self.mean);
        }
        if let Some(values) = self.values.as_mut() {
            values.push(v);
        }
    }

    pub fn merge(&mut self, o: &Acc) {
        if self.moments && o.n > 0 {
            if self.n == 0 {
                (self.mean, self.m2) = (o.mean, o.m2);
            } else {
                let (na, nb) = (self.n as f64, o.n as f64);
                let delta = o.mean - self.mean;
                let n = na + nb;
                self.mean += delta * nb / n;
                self.m2 += o.m2 + delta * delta * na * nb / n;
            }
        }
        self.n += o.n;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        if o.first.0 < self.first.0 {
            self.first = o.first;
        }
        if o.last.0 >= self.last.0 {
            self.last = o.last;
        }
        if let (Some(a), Some(b)) = (self.distinct.as_mut(), o.distinct.as_ref()) {
            a.extend(b.iter().copied());
        }
        if let (Some(a), Some(b)) = (self.values.as_mut(), o.values.as_ref()) {
            a.extend_from_slice(b);
        }
    }

    /// Empties it, keeping its allocations.
    pub fn clear(&mut self) {
        let mut distinct = self.distinct.take();
        let mut values = self.values.take();
        distinct.iter_mut().for_each(|d| d.clear());
        values.iter_mut().for_each(|v| v.clear());
        *self = Acc { distinct, values, ..Acc::new(Needs { moments: self.moments, ..Needs::default() }) };
    }

    /// Its state as a snapshot record ([`super::state`]); distinct hashes sorted, so equal
    /// accumulators give equal bytes.
    pub fn to_record(&self) -> AccRecord {
        let mut distinct: Option<Vec<u64>> = self.distinct.as_ref().map(|d| d.iter().copied().collect());
        if let Some(d) = distinct.as_mut() {
            d.sort_unstable();
        }
        AccRecord {
            n: self.n,
            sum: self.sum,
            min: self.min,
            max: self.max,
            first: self.first,
            last: self.last,
            mean: self.mean,
            m2: self.m2,
            moments: self.moments,
            distinct,
            values: self.values.clone(),
        }
    }

    /// The accumulator a record of [`Acc::to_record`] describes.
    pub fn from_record(r: AccRecord) -> Acc {
        Acc {
            n: r.n,
            sum: r.sum,
            min: r.min,
            max: r.max,
            first: r.first,
            last: r.last,
            mean: r.mean,
            m2: r.m2,
            moments: r.moments,
            distinct: r.distinct.map(|d| d.into_iter().collect()),
            values: r.values,
        }
    }

    /// Sample standard deviation.
    fn stddev(&self) -> Option<f64> {
        (self.n >= 2).then(|| (self.m2 / (self.n - 1) as f64).max(0.0).sqrt())
    }

    /// `percentile_cont(fraction)`: linear interpolation between the two closest ranks.
    /// Reorders the kept values (callers use it on scratch accumulators only).
    fn percentile(&mut self, fraction: f64) -> Option<f64> {
        let values = self.values.as_mut()?;
        if values.is_empty() {
            return None;
        }
        let rank = fraction.clamp(0.0, 1.0) * (values.len() - 1) as f64;
        let lo = rank.floor() as usize;
        let (_, &mut at_lo, above) = values.select_nth_unstable_by(lo, f64::total_cmp);
        let Some(at_hi) = above.iter().copied().min_by(f64::total_cmp) else { return Some(at_lo) };
        Some(at_lo + (at_hi - at_lo) * (rank - lo as f64))
    }
}

/// Builds one result column of a batch of closed windows.
pub(super) enum ColBuilder {
    Int(Int64Builder),
    Float(Float64Builder),
}

impl ColBuilder {
    pub fn for_aggregate(a: &Aggregate) -> ColBuilder {
        if a.func.is_count() { ColBuilder::Int(Int64Builder::new()) } else { ColBuilder::Float(Float64Builder::new()) }
    }

    /// Appends `agg`'s result over `acc` (a window of `count` events).
    pub fn push(&mut self, agg: &Aggregate, acc: &mut Acc, count: u64) {
        match self {
            ColBuilder::Int(b) => b.append_value(match agg.func {
                AggFunc::Count => count as i64,
                AggFunc::CountIf => acc.n as i64,
                _ => acc.distinct.as_ref().map_or(0, |d| d.len() as i64),
            }),
            ColBuilder::Float(b) => {
                let v = match agg.func {
                    _ if acc.n == 0 => None,
                    AggFunc::Sum => Some(acc.sum),
                    AggFunc::Avg => Some(acc.sum / acc.n as f64),
                    AggFunc::Min => Some(acc.min),
                    AggFunc::Max => Some(acc.max),
                    AggFunc::Delta => Some(acc.last.1 - acc.first.1),
                    AggFunc::Rate => {
                        let secs = (acc.last.0 - acc.first.0) as f64 / 1000.0;
                        (secs > 0.0).then(|| (acc.last.1 - acc.first.1) / secs)
                    }
                    AggFunc::First => Some(acc.first.1),
                    AggFunc::Last => Some(acc.last.1),
                    AggFunc::Stddev => acc.stddev(),
                    AggFunc::Percentile => acc.percentile(agg.fraction),
                    AggFunc::Count | AggFunc::CountDistinct | AggFunc::CountIf => None,
                };
                b.append_option(v);
            }
        }
    }

    pub fn finish(&mut self) -> ArrayRef {
        match self {
            ColBuilder::Int(b) => Arc::new(b.finish()),
            ColBuilder::Float(b) => Arc::new(b.finish()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc_of(values: &[f64], needs: Needs) -> Acc {
        let mut a = Acc::new(needs);
        for (i, &v) in values.iter().enumerate() {
            a.add(i as Millis, v);
        }
        a
    }

    fn result(func: AggFunc, fraction: f64, acc: &mut Acc) -> Option<f64> {
        let agg = Aggregate { fraction, ..Aggregate::new(func, Some(0), "x") };
        let mut b = ColBuilder::for_aggregate(&agg);
        b.push(&agg, acc, acc.n);
        let col = b.finish();
        let col = arrow::compute::cast(&col, &arrow::datatypes::DataType::Float64).unwrap();
        let col = col.as_any().downcast_ref::<arrow::array::Float64Array>().unwrap();
        arrow::array::Array::is_valid(col, 0).then(|| col.value(0))
    }

    const ALL: Needs = Needs { distinct: true, moments: true, values: true };

    #[test]
    fn stddev_is_the_sample_deviation_and_merges_exactly() {
        let xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        // Sample variance of xs: 32 / 7.
        let expected = (32.0f64 / 7.0).sqrt();
        let mut whole = acc_of(&xs, ALL);
        assert!((result(AggFunc::Stddev, 0.0, &mut whole).unwrap() - expected).abs() < 1e-12);
        let mut merged = Acc::new(ALL);
        for part in [&xs[..3], &xs[3..4], &[][..], &xs[4..]] {
            merged.merge(&acc_of(part, ALL));
        }
        assert!((result(AggFunc::Stddev, 0.0, &mut merged).unwrap() - expected).abs() < 1e-12);
        assert_eq!(result(AggFunc::Stddev, 0.0, &mut acc_of(&[3.0], ALL)), None);
    }

    #[test]
    fn stddev_of_large_values_with_a_small_spread_keeps_its_precision() {
        // A sum of squares would lose every digit here; Welford keeps them.
        let xs: Vec<f64> = (0..1000).map(|i| 1e9 + (i % 2) as f64).collect();
        let sd = result(AggFunc::Stddev, 0.0, &mut acc_of(&xs, ALL)).unwrap();
        assert!((sd - 0.500_250_187_656_386_8).abs() < 1e-9, "{sd}");
    }

    #[test]
    fn percentile_interpolates_between_ranks_like_percentile_cont() {
        let mut a = acc_of(&[10.0, 1.0, 4.0, 3.0], ALL); // sorted: 1 3 4 10
        assert_eq!(result(AggFunc::Percentile, 0.5, &mut a), Some(3.5));
        assert_eq!(result(AggFunc::Percentile, 0.0, &mut a), Some(1.0));
        assert_eq!(result(AggFunc::Percentile, 1.0, &mut a), Some(10.0));
        // rank 0.9 * 3 = 2.7: 4 + 0.7 * (10 - 4)
        assert!((result(AggFunc::Percentile, 0.9, &mut a).unwrap() - 8.2).abs() < 1e-12);
        assert_eq!(result(AggFunc::Percentile, 0.5, &mut acc_of(&[7.0], ALL)), Some(7.0));
        assert_eq!(result(AggFunc::Percentile, 0.5, &mut Acc::new(ALL)), None);
    }

    #[test]
    fn first_and_last_go_by_event_time_not_arrival() {
        let mut a = Acc::new(ALL);
        a.add(20, 2.0);
        a.add(10, 1.0);
        a.add(30, 3.0);
        a.add(30, 4.0); // a tie: the later arrival is last
        assert_eq!(result(AggFunc::First, 0.0, &mut a), Some(1.0));
        assert_eq!(result(AggFunc::Last, 0.0, &mut a), Some(4.0));
    }

    #[test]
    fn clear_forgets_everything_but_keeps_what_is_tracked() {
        let mut a = acc_of(&[1.0, 2.0, 3.0], ALL);
        a.distinct.as_mut().unwrap().insert(7);
        a.clear();
        assert_eq!(a.n, 0);
        assert_eq!(a.needs(), ALL);
        assert_eq!(result(AggFunc::Percentile, 0.5, &mut a), None);
        assert_eq!(result(AggFunc::Stddev, 0.0, &mut a), None);
        a.add(0, 5.0);
        a.add(1, 7.0);
        assert_eq!(result(AggFunc::Stddev, 0.0, &mut a), Some(2f64.sqrt()));
    }
}
