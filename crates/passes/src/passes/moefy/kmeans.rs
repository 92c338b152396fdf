//! Balanced k-means: partitions n points into k clusters of exactly n/k points each, minimizing the
//! squared Euclidean distance of points to their cluster's centroid. `moefy` uses it to group FFN
//! neurons into equal-size experts (MoEfication, arXiv 2110.01786, splits neurons the same way).
//!
//! Plain Lloyd iterations with one change: the assignment step is greedy under a capacity. All
//! (point, cluster) pairs are visited by increasing distance and a point joins the first cluster
//! that still has room, so every cluster ends with n/k points. Seeding is k-means++ (Arthur and
//! Vassilvitskii, 2007) from a fixed-seed generator and the iteration count is bounded, so the
//! result depends only on the points and the options: the same model always gives the same experts.

/// How to run [`balanced_kmeans`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KMeansOptions {
    /// Lloyd iterations at most (it stops earlier once no point changes cluster).
    pub iterations: usize,
    /// Seed of the k-means++ initialization.
    pub seed: u64,
}

impl Default for KMeansOptions {
    fn default() -> KMeansOptions {
        KMeansOptions { iterations: 25, seed: 0x6d6f_6566_7921 }
    }
}

/// The result of [`balanced_kmeans`].
#[derive(Clone, Debug, PartialEq)]
pub struct Clustering {
    /// The cluster of each point, in `0..k`; each cluster has exactly n/k points.
    pub assignment: Vec<usize>,
    /// The clusters' centroids, `k × dim` row-major.
    pub centroids: Vec<f32>,
    /// The mean Euclidean distance from a point to its cluster's centroid.
    pub mean_distance: f64,
    /// Lloyd iterations run.
    pub iterations: usize,
}

/// A small deterministic generator (SplitMix64) for the seeding; no external crate needed.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }
}

/// ‖a − b‖², with independent partial sums so the loop vectorizes.
fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| (x - y) * (x - y)).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn check(points: &[f32], dim: usize, k: usize) -> Result<usize, String> {
    if dim == 0 || !points.len().is_multiple_of(dim) {
        return Err(format!("{} values do not make points of dimension {dim}", points.len()));
    }
    let n = points.len() / dim;
    if k == 0 || n == 0 || !n.is_multiple_of(k) {
        return Err(format!("{n} points cannot be split into {k} clusters of equal size"));
    }
    Ok(n)
}

/// k-means++ seeding: the first centroid is a random point, each next one a point drawn with
/// probability proportional to its squared distance from the nearest centroid so far.
fn seed_centroids(points: &[f32], dim: usize, k: usize, rng: &mut Rng) -> Vec<f32> {
    let n = points.len() / dim;
    let point = |i: usize| &points[i * dim..(i + 1) * dim];
    let mut chosen = vec![rng.below(n)];
    let mut nearest: Vec<f64> = (0..n).map(|i| sq_dist(point(i), point(chosen[0])) as f64).collect();
    while chosen.len() < k {
        let total: f64 = nearest.iter().sum();
        let next = if total > 0.0 && total.is_finite() {
            let mut r = rng.unit() * total;
            let mut pick = n - 1;
            for (i, &d) in nearest.iter().enumerate() {
                if r < d {
                    pick = i;
                    break;
                }
                r -= d;
            }
            pick
        } else {
            // Every point sits on a centroid already (duplicates): take the first unchosen one.
            (0..n).find(|i| !chosen.contains(i)).unwrap_or(0)
        };
        chosen.push(next);
        for (i, d) in nearest.iter_mut().enumerate() {
            *d = d.min(sq_dist(point(i), point(next)) as f64);
        }
    }
    chosen.iter().flat_map(|&i| point(i).iter().copied()).collect()
}

/// Greedy capacity-constrained assignment: pairs by increasing distance (ties by point, then
/// cluster), each point to the first cluster with room left.
fn assign(points: &[f32], dim: usize, centroids: &[f32], k: usize) -> Vec<usize> {
    let n = points.len() / dim;
    let mut pairs: Vec<(f32, u32, u32)> = Vec::with_capacity(n * k);
    for i in 0..n {
        let p = &points[i * dim..(i + 1) * dim];
        for c in 0..k {
            pairs.push((sq_dist(p, &centroids[c * dim..(c + 1) * dim]), i as u32, c as u32));
        }
    }
    pairs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut room = vec![n / k; k];
    let mut assignment = vec![usize::MAX; n];
    let mut left = n;
    for (_, i, c) in pairs {
        let (i, c) = (i as usize, c as usize);
        if assignment[i] == usize::MAX && room[c] > 0 {
            assignment[i] = c;
            room[c] -= 1;
            left -= 1;
            if left == 0 {
                break;
            }
        }
    }
    assignment
}

/// The mean of each cluster's points (f64 sums).
fn centroids_of(points: &[f32], dim: usize, assignment: &[usize], k: usize) -> Vec<f32> {
    let mut sums = vec![0f64; k * dim];
    let mut counts = vec![0usize; k];
    for (i, &c) in assignment.iter().enumerate() {
        counts[c] += 1;
        for (s, &x) in sums[c * dim..(c + 1) * dim].iter_mut().zip(&points[i * dim..(i + 1) * dim]) {
            *s += x as f64;
        }
    }
    sums.iter().enumerate().map(|(j, &s)| (s / counts[j / dim].max(1) as f64) as f32).collect()
}

/// The mean Euclidean distance from each point to the centroid of its cluster under `assignment`
/// (any partition into `k` clusters, balanced or not): the quality measure k-means lowers.
pub fn mean_distance(points: &[f32], dim: usize, assignment: &[usize], k: usize) -> Result<f64, String> {
    let n = check(points, dim, 1)?;
    if assignment.len() != n || assignment.iter().any(|&c| c >= k) {
        return Err(format!("an assignment of {n} points to clusters 0..{k} is needed"));
    }
    let centroids = centroids_of(points, dim, assignment, k);
    Ok(distance_to(points, dim, assignment, &centroids))
}

fn distance_to(points: &[f32], dim: usize, assignment: &[usize], centroids: &[f32]) -> f64 {
    let n = assignment.len();
    let total: f64 = assignment
        .iter()
        .enumerate()
        .map(|(i, &c)| (sq_dist(&points[i * dim..(i + 1) * dim], &centroids[c * dim..(c + 1) * dim]) as f64).sqrt())
        .sum();
    total / n.max(1) as f64
}

/// A uniformly random partition of `n` points into `k` clusters of n/k each (a seeded shuffle): the
/// baseline balanced k-means should beat. Errors when `k` does not divide `n`.
pub fn random_partition(n: usize, k: usize, seed: u64) -> Result<Vec<usize>, String> {
    if k == 0 || n == 0 || !n.is_multiple_of(k) {
        return Err(format!("{n} points cannot be split into {k} clusters of equal size"));
    }
    let mut rng = Rng(seed);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let mut assignment = vec![0; n];
    for (pos, &i) in order.iter().enumerate() {
        assignment[i] = pos / (n / k);
    }
    Ok(assignment)
}

/// Splits the `points.len() / dim` points (row-major) into `k` clusters of equal size. Errors when
/// the points do not divide evenly.
pub fn balanced_kmeans(points: &[f32], dim: usize, k: usize, opts: KMeansOptions) -> Result<Clustering, String> {
    check(points, dim, k)?;
    let mut rng = Rng(opts.seed);
    let mut centroids = seed_centroids(points, dim, k, &mut rng);
    let mut assignment = assign(points, dim, &centroids, k);
    let mut iterations = 0;
    while iterations < opts.iterations {
        iterations += 1;
        centroids = centroids_of(points, dim, &assignment, k);
        let next = assign(points, dim, &centroids, k);
        if next == assignment {
            break;
        }
        assignment = next;
    }
    let centroids = centroids_of(points, dim, &assignment, k);
    let mean_distance = distance_to(points, dim, &assignment, &centroids);
    Ok(Clustering { assignment, centroids, mean_distance, iterations })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separated_groups_are_found_exactly() {
        // Three tight groups of 4 points on a line, shuffled.
        let xs = [10.0, 0.1, 20.2, 0.0, 10.1, 20.0, 0.3, 10.3, 20.1, 0.2, 10.2, 20.3f32];
        let c = balanced_kmeans(&xs, 1, 3, KMeansOptions::default()).unwrap();
        for (i, &x) in xs.iter().enumerate() {
            for (j, &y) in xs.iter().enumerate() {
                let same_group = (x / 10.0).round() == (y / 10.0).round();
                assert_eq!(c.assignment[i] == c.assignment[j], same_group, "{x} and {y}");
            }
        }
        assert!(c.mean_distance < 0.2);
    }

    #[test]
    fn capacity_forces_equal_sizes() {
        // Five points near 0 and one far away: two clusters of three each.
        let xs = [0.0, 0.1, 0.2, 0.3, 0.4, 100.0f32];
        let c = balanced_kmeans(&xs, 1, 2, KMeansOptions::default()).unwrap();
        let far = c.assignment[5];
        assert_eq!(c.assignment.iter().filter(|&&a| a == far).count(), 3);
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(balanced_kmeans(&[1.0; 6], 2, 2, KMeansOptions::default()).unwrap_err().contains("3 points"));
        assert!(balanced_kmeans(&[1.0; 5], 2, 1, KMeansOptions::default()).is_err());
        assert!(balanced_kmeans(&[1.0; 4], 1, 0, KMeansOptions::default()).is_err());
        assert!(mean_distance(&[1.0; 4], 1, &[0, 1, 2, 0], 2).is_err());
    }

    #[test]
    fn identical_points_still_split() {
        let c = balanced_kmeans(&[1.0; 8], 2, 4, KMeansOptions::default()).unwrap();
        for e in 0..4 {
            assert_eq!(c.assignment.iter().filter(|&&a| a == e).count(), 1);
        }
        assert_eq!(c.mean_distance, 0.0);
    }
}
