//! Free space, decided purely: what files take on disk, the margin a run keeps, whether a
//! run's writes fit its filesystems ([`check_space`]), and, when they do not, which specs to
//! publish so that what fits is published ([`fit`]). The free space itself is read by
//! `mirror`; `sync` applies the verdicts.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;

use crate::model::Digest;

/// Space every file takes at least: filesystems allocate whole blocks.
pub const BLOCK: u64 = 4096;
/// The least free space a run keeps in reserve on each filesystem it writes to.
pub const MIN_MARGIN: u64 = 1 << 20;

/// The bytes `sizes` take on disk, each file rounded up to whole blocks.
pub fn on_disk(sizes: impl IntoIterator<Item = u64>) -> u64 {
    sizes
        .into_iter()
        .map(|n| n.div_ceil(BLOCK).saturating_mul(BLOCK))
        .fold(0, u64::saturating_add)
}

/// The reserve kept free beyond what a run expects to write: the larger of 1 MiB and 1% of
/// it. It covers directories, the estimates of the small files and the ledger, and other
/// writers on the filesystem, without refusing small runs on small filesystems (a 100 KiB
/// run needs 1.1 MiB free). A run that writes nothing needs nothing.
pub fn space_margin(needed: u64) -> u64 {
    if needed == 0 {
        0
    } else {
        (needed / 100).max(MIN_MARGIN)
    }
}

/// What a run will write on one filesystem, and what is free there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceDemand {
    /// The config key that places this directory (`mirror.root`, `state.dir`).
    pub key: &'static str,
    pub path: PathBuf,
    /// The filesystem (`st_dev`); demands on the same one add up.
    pub dev: u64,
    /// Bytes the run still has to write there, without the margin.
    pub needed: u64,
    /// Bytes free there.
    pub available: u64,
}

/// A filesystem without room for the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceShortfall {
    /// The config keys placing directories on it, in the order given.
    pub keys: Vec<&'static str>,
    /// The first directory on it.
    pub path: PathBuf,
    /// Bytes needed there, margin included.
    pub needed: u64,
    pub available: u64,
}

/// The free-space pre-flight: every filesystem must hold what the run writes there plus
/// [`space_margin`]. Returns the first one that cannot.
pub fn check_space(demands: &[SpaceDemand]) -> Result<(), SpaceShortfall> {
    let mut by_dev: Vec<(u64, SpaceShortfall)> = Vec::new();
    for d in demands {
        match by_dev.iter_mut().find(|(dev, _)| *dev == d.dev) {
            Some((_, s)) => {
                s.keys.push(d.key);
                s.needed = s.needed.saturating_add(d.needed);
                s.available = s.available.min(d.available);
            }
            None => by_dev.push((
                d.dev,
                SpaceShortfall {
                    keys: vec![d.key],
                    path: d.path.clone(),
                    needed: d.needed,
                    available: d.available,
                },
            )),
        }
    }
    for (_, mut s) in by_dev {
        s.needed = s.needed.saturating_add(space_margin(s.needed));
        if s.needed > s.available {
            return Err(s);
        }
    }
    Ok(())
}

/// A spec competing for the free space of a run: what it writes on each volume (the index
/// into the budgets of [`fit`]), its shared blobs (a tarball several specs name, counted
/// once), and the other claims it needs (its link/run dependencies among them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub key: String,
    /// Keys of other claims this one cannot be published without.
    pub needs: Vec<String>,
    /// Bytes of its own files, per volume.
    pub own: Vec<u64>,
    /// Shared blobs and their bytes per volume; a blob accepted with one claim is free for
    /// the others.
    pub blobs: Vec<(Digest, Vec<u64>)>,
}

/// Why a claim was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRoom {
    /// Its files do not fit on `volume`: `needed` with margin, `left` of the free space.
    Space {
        volume: usize,
        needed: u64,
        available: u64,
    },
    /// A claim it needs was left out.
    Needs(String),
}

/// The verdict of [`fit`]: indexes into the claims, in the order they were considered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fit {
    pub accepted: Vec<usize>,
    pub rejected: Vec<(usize, NoRoom)>,
}

/// Chooses the claims to publish when not all fit: dependencies before what needs them, ties
/// in the order given (callers sort, so the choice is the same on every run); each claim is
/// taken when it and everything it adds fit every volume with [`space_margin`] on top of
/// `reserved`, and left out otherwise, as is every claim that needs one left out. A claim is
/// never taken without the claims it needs, so what is published is complete.
pub fn fit(claims: &[Claim], reserved: &[u64], available: &[u64]) -> Fit {
    let index: HashMap<&str, usize> = claims
        .iter()
        .enumerate()
        .map(|(i, c)| (c.key.as_str(), i))
        .collect();
    let needs: Vec<Vec<usize>> = claims
        .iter()
        .map(|c| {
            c.needs
                .iter()
                .filter_map(|k| index.get(k.as_str()).copied())
                .collect()
        })
        .collect();
    let mut used: Vec<u64> = reserved.to_vec();
    used.resize(available.len(), 0);
    let mut counted: HashSet<&Digest> = HashSet::new();
    let mut taken: Vec<Option<bool>> = vec![None; claims.len()];
    let mut out = Fit::default();
    for i in dependency_order(&needs) {
        let c = &claims[i];
        if let Some(&dep) = needs[i].iter().find(|&&d| taken[d] != Some(true)) {
            taken[i] = Some(false);
            out.rejected
                .push((i, NoRoom::Needs(claims[dep].key.clone())));
            continue;
        }
        let mut after = used.clone();
        add_costs(&mut after, &c.own);
        let new_blobs: Vec<&Digest> = c
            .blobs
            .iter()
            .filter(|(d, _)| !counted.contains(d))
            .map(|(d, costs)| {
                add_costs(&mut after, costs);
                d
            })
            .collect();
        let short = after.iter().enumerate().find_map(|(v, &n)| {
            let needed = n.saturating_add(space_margin(n));
            (needed > available[v]).then_some(NoRoom::Space {
                volume: v,
                needed,
                available: available[v],
            })
        });
        if let Some(why) = short {
            taken[i] = Some(false);
            out.rejected.push((i, why));
        } else {
            taken[i] = Some(true);
            used = after;
            counted.extend(new_blobs);
            out.accepted.push(i);
        }
    }
    out
}

/// Adds `costs` to `used`, volume by volume.
fn add_costs(used: &mut [u64], costs: &[u64]) {
    for (u, n) in used.iter_mut().zip(costs) {
        *u = u.saturating_add(*n);
    }
}

/// What [`fit`] would use per volume if it took every claim, each given as its own costs and
/// its shared blob (counted once), on top of `reserved`; without building the claims.
pub fn total_use<'a>(
    reserved: &[u64],
    costs: impl IntoIterator<Item = (Vec<u64>, Option<(&'a Digest, Vec<u64>)>)>,
) -> Vec<u64> {
    let mut used = reserved.to_vec();
    let mut counted: HashSet<&Digest> = HashSet::new();
    for (own, blob) in costs {
        add_costs(&mut used, &own);
        if let Some((d, blob_costs)) = blob
            && counted.insert(d)
        {
            add_costs(&mut used, &blob_costs);
        }
    }
    used
}

/// Whether claims totalling `used` per volume all fit, margin included. When they do,
/// [`fit`] accepts every one of them (each step of it uses no more than the total, and the
/// margin grows with what is used), so the claims need not be built one by one.
pub fn fits_whole(used: &[u64], available: &[u64]) -> bool {
    used.iter()
        .zip(available)
        .all(|(&n, &free)| n.saturating_add(space_margin(n)) <= free)
}

/// Indexes with every claim after the claims it needs; ties (and any cycle) in index order.
fn dependency_order(needs: &[Vec<usize>]) -> Vec<usize> {
    let mut waiting: Vec<usize> = needs.iter().map(Vec::len).collect();
    let mut needed_by: Vec<Vec<usize>> = vec![Vec::new(); needs.len()];
    for (i, ns) in needs.iter().enumerate() {
        for &n in ns {
            needed_by[n].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..needs.len()).filter(|&i| waiting[i] == 0).collect();
    let mut order = Vec::with_capacity(needs.len());
    let mut placed = vec![false; needs.len()];
    while order.len() < needs.len() {
        let next = match ready.pop_first() {
            Some(i) => i,
            // A cycle: take the first claim not yet placed.
            None => match placed.iter().position(|p| !p) {
                Some(i) => i,
                None => break,
            },
        };
        if placed[next] {
            continue;
        }
        placed[next] = true;
        order.push(next);
        for &d in &needed_by[next] {
            waiting[d] = waiting[d].saturating_sub(1);
            if waiting[d] == 0 && !placed[d] {
                ready.insert(d);
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;

    fn demand(key: &'static str, dev: u64, needed: u64, available: u64) -> SpaceDemand {
        SpaceDemand {
            key,
            path: PathBuf::from(format!("/fs{dev}/{key}")),
            dev,
            needed,
            available,
        }
    }

    #[test]
    fn the_margin_is_one_mib_or_one_percent_and_nothing_for_nothing() {
        for (needed, margin) in [
            (0, 0),
            (1, MIB),
            (100 * KIB, MIB),
            (100 * MIB, MIB),
            (200 * MIB, 2 * MIB),
            (1 << 40, (1 << 40) / 100),
            (u64::MAX, u64::MAX / 100),
        ] {
            assert_eq!(space_margin(needed), margin, "needed {needed}");
        }
    }

    #[test]
    fn files_take_whole_blocks() {
        assert_eq!(on_disk([]), 0);
        assert_eq!(on_disk([0, 1, 4096, 4097]), 4096 + 4096 + 8192);
        assert_eq!(on_disk([u64::MAX, 1]), u64::MAX);
    }

    #[test]
    fn the_preflight_compares_need_plus_margin_with_free_space() {
        // (needed, available, fits): a 2 MiB filesystem, as in the disk tests.
        for (needed, available, fits) in [
            (0, 0, true),
            (100 * KIB, 2 * MIB, true),
            (MIB, 2 * MIB, true),
            (MIB + 1, 2 * MIB, false),
            (3 * MIB, 2 * MIB, false),
            (1, MIB, false),
            (500 * MIB, 506 * MIB, true),
            (500 * MIB, 504 * MIB, false),
        ] {
            let got = check_space(&[demand("mirror.root", 1, needed, available)]);
            assert_eq!(got.is_ok(), fits, "needed {needed}, available {available}");
        }
    }

    #[test]
    fn a_shortfall_names_the_filesystem_with_margin_included() {
        let err = check_space(&[
            demand("mirror.root", 1, 10 * KIB, 100 * MIB),
            demand("state.dir", 2, 3 * MIB, 2 * MIB),
        ])
        .unwrap_err();
        assert_eq!(
            err,
            SpaceShortfall {
                keys: vec!["state.dir"],
                path: PathBuf::from("/fs2/state.dir"),
                needed: 4 * MIB,
                available: 2 * MIB,
            }
        );
    }

    #[test]
    fn demands_on_one_filesystem_add_up() {
        let root = demand("mirror.root", 7, 600 * KIB, 2 * MIB);
        let state = demand("state.dir", 7, 600 * KIB, 2 * MIB);
        assert!(check_space(std::slice::from_ref(&root)).is_ok());
        let err = check_space(&[root.clone(), state.clone()]).unwrap_err();
        assert_eq!(err.keys, ["mirror.root", "state.dir"]);
        assert_eq!(err.path, root.path);
        assert_eq!(err.needed, 1200 * KIB + MIB);
        // On two filesystems, each holds its own share.
        let state = SpaceDemand { dev: 8, ..state };
        assert!(check_space(&[root, state]).is_ok());
    }

    fn claim(key: &str, needs: &[&str], own: u64, blob: Option<(&str, u64)>) -> Claim {
        Claim {
            key: key.to_owned(),
            needs: needs.iter().map(|s| (*s).to_owned()).collect(),
            own: vec![own],
            blobs: blob
                .map(|(b, n)| vec![(Digest::of(b.as_bytes()), vec![n])])
                .unwrap_or_default(),
        }
    }

    fn keys(claims: &[Claim], idx: &[usize]) -> Vec<String> {
        idx.iter().map(|&i| claims[i].key.clone()).collect()
    }

    #[test]
    fn the_whole_fits_exactly_when_fit_takes_every_claim() {
        // Two volumes; a shared blob counted once. The total is 3 MiB on volume 0 (+ margin
        // 1 MiB) and 1 MiB on volume 1 (+ 1 MiB).
        let claims = [
            Claim {
                own: vec![MIB, MIB / 2],
                ..claim("a", &[], 0, Some(("t", MIB)))
            },
            Claim {
                own: vec![MIB, MIB / 2],
                ..claim("b", &["a"], 0, Some(("t", MIB)))
            },
        ];
        let total = [3 * MIB, MIB];
        let t = Digest::of(b"t");
        let costs = [
            (vec![MIB, MIB / 2], Some((&t, vec![MIB, 0]))),
            (vec![MIB, MIB / 2], Some((&t, vec![MIB, 0]))),
        ];
        assert_eq!(total_use(&[0, 0], costs), total, "the shared blob once");
        for (free, all) in [
            ([4 * MIB, 2 * MIB], true),
            ([4 * MIB - 1, 2 * MIB], false),
            ([4 * MIB, 2 * MIB - 1], false),
        ] {
            let mut claims = claims.clone();
            for c in &mut claims {
                c.blobs[0].1 = vec![MIB, 0];
            }
            assert_eq!(fits_whole(&total, &free), all, "{free:?}");
            let verdict = fit(&claims, &[0, 0], &free);
            assert_eq!(verdict.rejected.is_empty(), all, "{free:?}: {verdict:?}");
        }
        assert!(
            fits_whole(&[0, 0], &[0, 0]),
            "nothing to write needs nothing"
        );
    }

    #[test]
    fn everything_is_taken_when_everything_fits() {
        let claims = [claim("a", &[], 10, None), claim("b", &["a"], 10, None)];
        let fit = fit(&claims, &[0], &[100 * MIB]);
        assert_eq!(keys(&claims, &fit.accepted), ["a", "b"]);
        assert!(fit.rejected.is_empty());
    }

    #[test]
    fn what_does_not_fit_is_left_out_with_what_needs_it_and_the_rest_is_taken() {
        // 10 MiB free: "big" (20 MiB) cannot fit, "app" needs it; "zlib" and "cmake" fit.
        let claims = [
            claim("app", &["big"], MIB, None),
            claim("big", &[], 20 * MIB, None),
            claim("cmake", &[], 2 * MIB, None),
            claim("zlib", &[], MIB, None),
        ];
        let fit = fit(&claims, &[0], &[10 * MIB]);
        assert_eq!(keys(&claims, &fit.accepted), ["cmake", "zlib"]);
        let rejected: Vec<(String, NoRoom)> = fit
            .rejected
            .iter()
            .map(|(i, why)| (claims[*i].key.clone(), why.clone()))
            .collect();
        assert_eq!(rejected[0].0, "big");
        assert!(matches!(rejected[0].1, NoRoom::Space { volume: 0, .. }));
        assert_eq!(
            rejected[1],
            ("app".to_owned(), NoRoom::Needs("big".to_owned()))
        );
    }

    #[test]
    fn dependencies_are_considered_before_what_needs_them() {
        // "a" comes first in the list but needs "z": "z" is weighed first, so "a" gets in.
        let claims = [
            claim("a", &["z"], 4 * MIB, None),
            claim("z", &[], 4 * MIB, None),
        ];
        let fit = fit(&claims, &[0], &[10 * MIB]);
        assert_eq!(keys(&claims, &fit.accepted), ["z", "a"]);
    }

    #[test]
    fn a_shared_blob_is_paid_once_and_reserved_bytes_and_margins_count() {
        let claims = [
            claim("a", &[], 0, Some(("tar", 6 * MIB))),
            claim("b", &[], 0, Some(("tar", 6 * MIB))),
            claim("c", &[], 0, Some(("other", 6 * MIB))),
        ];
        let fit = fit(&claims, &[MIB], &[9 * MIB]);
        assert_eq!(keys(&claims, &fit.accepted), ["a", "b"]);
        assert_eq!(
            fit.rejected,
            [(
                2,
                NoRoom::Space {
                    volume: 0,
                    needed: 14 * MIB,
                    available: 9 * MIB
                }
            )]
        );
    }

    #[test]
    fn each_volume_must_hold_its_share() {
        let claims = [Claim {
            key: "a".to_owned(),
            needs: vec![],
            own: vec![MIB, 5 * MIB],
            blobs: vec![],
        }];
        let fit = fit(&claims, &[0, 0], &[100 * MIB, 4 * MIB]);
        assert!(matches!(
            fit.rejected[..],
            [(0, NoRoom::Space { volume: 1, .. })]
        ));
    }

    #[test]
    fn a_cycle_does_not_hang_and_is_still_decided() {
        let claims = [claim("a", &["b"], MIB, None), claim("b", &["a"], MIB, None)];
        let fit = fit(&claims, &[0], &[100 * MIB]);
        assert_eq!(fit.accepted.len() + fit.rejected.len(), 2);
    }
}
