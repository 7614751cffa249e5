//! Shared window and noise helpers of the event detectors: exact sorted-window median/MAD,
//! robust noise level from first differences, and the series' resolution.

pub(crate) fn median_of(buf: &mut [f64]) -> f64 {
    let n = buf.len();
    let mid = n / 2;
    let (_, m, _) = buf.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    let m = *m;
    if n % 2 == 1 {
        m
    } else {
        let lo = buf[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo + m) / 2.0
    }
}

/// Median and 1.4826·MAD of a slice (copies into `scratch`); the reference for SortedWindow.
#[cfg(test)]
fn median_mad(xs: &[f64], scratch: &mut Vec<f64>) -> (f64, f64) {
    scratch.clear();
    scratch.extend_from_slice(xs);
    let med = median_of(scratch);
    for v in scratch.iter_mut() {
        *v = (*v - med).abs();
    }
    (med, 1.4826 * median_of(scratch))
}

/// The trailing baseline window kept sorted. A slide (one value out, one in) is one binary
/// search for each and one memmove of the values between the two positions (about a third of
/// the window on average, where a removal and an insertion would move a whole window); the
/// median is O(1) and the MAD O(log window), by selecting the middle deviations from the two
/// sorted runs below and above the median. Gives exactly [`median_mad`]'s values.
#[derive(Default)]
pub(crate) struct SortedWindow {
    sorted: Vec<f64>,
}

impl SortedWindow {
    fn pos(&self, x: f64) -> usize {
        self.sorted
            .partition_point(|v| v.total_cmp(&x) == std::cmp::Ordering::Less)
    }
    pub(crate) fn insert(&mut self, x: f64) {
        let i = self.pos(x);
        self.sorted.insert(i, x);
    }
    /// Removes one copy of `old` (a value in the window) and inserts `new`.
    pub(crate) fn replace(&mut self, old: f64, new: f64) {
        let i = self.pos(old);
        if i >= self.sorted.len() || !self.sorted[i].total_cmp(&old).is_eq() {
            self.insert(new);
            return;
        }
        let j = self.pos(new);
        let s = &mut self.sorted;
        if j <= i {
            // s[j..i] are at or above `new`: they move up one, over `old`.
            s.copy_within(j..i, j + 1);
            s[j] = new;
        } else {
            // s[i+1..j] are below `new`: they move down one, over `old`.
            s.copy_within(i + 1..j, i);
            s[j - 1] = new;
        }
    }
    /// The window holding exactly `xs` (in any order).
    pub(crate) fn fill(&mut self, xs: &[f64]) {
        self.sorted.clear();
        self.sorted.extend_from_slice(xs);
        self.sorted.sort_unstable_by(|a, b| a.total_cmp(b));
    }
    pub(crate) fn clear(&mut self) {
        self.sorted.clear();
    }
    pub(crate) fn len(&self) -> usize {
        self.sorted.len()
    }
    /// The median (NaN when empty).
    pub(crate) fn median(&self) -> f64 {
        let s = &self.sorted;
        let n = s.len();
        match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => s[n / 2],
            _ => (s[n / 2 - 1] + s[n / 2]) / 2.0,
        }
    }
    /// Median and 1.4826 · MAD (NaN when empty).
    pub(crate) fn median_mad(&self) -> (f64, f64) {
        let s = &self.sorted;
        let n = s.len();
        if n == 0 {
            return (f64::NAN, f64::NAN);
        }
        let med = self.median();
        // Deviations: below the median (descending values → ascending deviations) and above.
        let p = s.partition_point(|v| *v < med);
        let a = |j: usize| med - s[p - 1 - j];
        let b = |j: usize| s[p + j] - med;
        let (na, nb) = (p, n - p);
        // The k-th and (k+1)-th smallest (0-based) of the union of the two ascending runs:
        // find how many of the k+1 smallest come from the first run, then the next one is the
        // smaller of the two runs' next values.
        let kth2 = |k: usize| -> (f64, f64) {
            let (mut lo, mut hi) = ((k + 1).saturating_sub(nb), (k + 1).min(na));
            while lo < hi {
                let i = (lo + hi) / 2;
                let j = k + 1 - i;
                if j > 0 && i < na && b(j - 1) > a(i) {
                    lo = i + 1;
                } else {
                    hi = i;
                }
            }
            let (i, j) = (lo, k + 1 - lo);
            let x = if i > 0 { a(i - 1) } else { f64::NEG_INFINITY };
            let y = if j > 0 { b(j - 1) } else { f64::NEG_INFINITY };
            let nx = if i < na { a(i) } else { f64::INFINITY };
            let ny = if j < nb { b(j) } else { f64::INFINITY };
            (x.max(y), nx.min(ny))
        };
        let mad = if n % 2 == 1 {
            kth2(n / 2).0
        } else {
            let (lo, hi) = kth2(n / 2 - 1);
            (lo + hi) / 2.0
        };
        (med, 1.4826 * mad)
    }
}

/// Noise level of a series, robust to level shifts, trends and the anomalies themselves:
/// 1.4826 · median(|x[t] − x[t−1]|) / √2; when that is 0 (mostly-constant series), the mean
/// absolute first difference / √2.
pub(crate) fn noise_scale(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return 0.0;
    }
    let mut d: Vec<f64> = xs.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
    let mean_abs = d.iter().sum::<f64>() / d.len() as f64;
    let med = median_of(&mut d);
    if med > 0.0 {
        1.4826 * med / std::f64::consts::SQRT_2
    } else {
        mean_abs / std::f64::consts::SQRT_2
    }
}

/// The series' resolution: the smallest positive gap between distinct values (1 for counts).
pub(crate) fn quantum(xs: &[f64]) -> f64 {
    let mut s = xs.to_vec();
    s.sort_unstable_by(|a, b| a.total_cmp(b));
    s.windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 0.0)
        .fold(f64::INFINITY, f64::min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_window_matches_direct_median_mad_while_sliding() {
        // Odd and even windows, ties and repeated values (rounded values), and one value far
        // from the rest now and then; the slide replaces the oldest value with the newest.
        for (seed, cap) in [(11, 37), (12, 36), (13, 2), (14, 1)] {
            let mut r = crate::rng::Rng::new(seed);
            let mut w = SortedWindow::default();
            let mut plain: Vec<f64> = Vec::new();
            let mut scratch = Vec::new();
            for step in 0..5000 {
                let x = (r.normal() * 4.0).round() / 2.0 + if step % 7 == 0 { 10.0 } else { 0.0 };
                plain.push(x);
                if plain.len() > cap {
                    let old = plain.remove(0);
                    w.replace(old, x);
                } else {
                    w.insert(x);
                }
                let (m1, d1) = w.median_mad();
                assert_eq!(w.median().to_bits(), m1.to_bits());
                let (m2, d2) = median_mad(&plain, &mut scratch);
                assert_eq!((m1, d1), (m2, d2), "cap {cap}, step {step}: {plain:?}");
            }
        }
    }
}
