//! Free space where the worker will keep models, adapters and datasets.

use std::path::{Path, PathBuf};

use sysinfo::{DiskRefreshKind, Disks};

/// Never fails: a worker whose disk cannot be measured advertises zero and so is only
/// offered jobs whose inputs it already holds, rather than refusing to start.
pub(super) fn free_bytes_for(data_dir: &Path) -> u64 {
    let Some(existing) = nearest_existing_canonical(data_dir) else {
        tracing::warn!(
            data_dir = %data_dir.display(),
            "no ancestor of the data dir can be resolved; reporting 0 bytes of free disk"
        );
        return 0;
    };

    let disks =
        match Disks::new_with_refreshed_list_specifics(DiskRefreshKind::nothing().with_storage()) {
            Ok(disks) => disks,
            Err(error) => {
                tracing::warn!(%error, "cannot list filesystems; reporting 0 bytes of free disk");
                return 0;
            }
        };

    let mounts = disks
        .iter()
        .map(|disk| (disk.mount_point(), disk.available_space()));
    match select_mount_available(&existing, mounts) {
        Some(available) => available,
        None => {
            tracing::warn!(
                path = %existing.display(),
                "no listed filesystem holds the data dir; reporting 0 bytes of free disk"
            );
            0
        }
    }
}

/// The data dir is usually created after the probe (on first download), so we measure the
/// filesystem that will hold it: the one holding its nearest existing ancestor.
/// Canonicalising resolves symlinks, which commonly point a data dir at another disk.
fn nearest_existing_canonical(data_dir: &Path) -> Option<PathBuf> {
    let absolute = match std::path::absolute(data_dir) {
        Ok(path) => path,
        Err(error) => {
            tracing::debug!(%error, data_dir = %data_dir.display(), "cannot make path absolute");
            return None;
        }
    };
    absolute
        .ancestors()
        .find_map(|ancestor| ancestor.canonicalize().ok())
}

/// Available bytes on the mount that holds `path`: the mount point that is the longest
/// prefix of it, compared by whole components so that `/data2/x` is not taken to live on
/// `/data`. On a tie the later entry wins, because a later mount on the same point shadows
/// the earlier one (mount tables list mounts in the order they were made).
fn select_mount_available<'a>(
    path: &Path,
    mounts: impl IntoIterator<Item = (&'a Path, u64)>,
) -> Option<u64> {
    let mut best: Option<(usize, u64)> = None;
    for (mount_point, available) in mounts {
        if !path.starts_with(mount_point) {
            continue;
        }
        let depth = mount_point.components().count();
        if best.is_none_or(|(best_depth, _)| depth >= best_depth) {
            best = Some((depth, available));
        }
    }
    best.map(|(_, available)| available)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(path: &str, mounts: &[(&str, u64)]) -> Option<u64> {
        select_mount_available(
            Path::new(path),
            mounts.iter().map(|(m, a)| (Path::new(*m), *a)),
        )
    }

    const MOUNTS: &[(&str, u64)] = &[("/", 1), ("/data", 2), ("/data2", 3)];

    #[test]
    fn deepest_mount_that_contains_the_path_wins() {
        assert_eq!(select("/data/models/llama", MOUNTS), Some(2));
        assert_eq!(select("/data2/models", MOUNTS), Some(3));
        assert_eq!(select("/home/olc", MOUNTS), Some(1));
    }

    #[test]
    fn prefix_is_by_component_not_by_string() {
        assert_eq!(select("/data2x/blobs", MOUNTS), Some(1));
        assert_eq!(select("/dat", MOUNTS), Some(1));
        // Order in the table must not matter for different mount points.
        assert_eq!(
            select("/data/x", &[("/data2", 3), ("/data", 2), ("/", 1)]),
            Some(2)
        );
    }

    #[test]
    fn path_equal_to_a_mount_point_uses_that_mount() {
        assert_eq!(select("/data", MOUNTS), Some(2));
        assert_eq!(select("/data/", MOUNTS), Some(2));
        assert_eq!(select("/", MOUNTS), Some(1));
    }

    #[test]
    fn nothing_matching_gives_none() {
        assert_eq!(select("/srv/olc", &[("/data", 2), ("/data2", 3)]), None);
        assert_eq!(select("/srv/olc", &[]), None);
    }

    #[test]
    fn later_mount_on_the_same_point_shadows_the_earlier() {
        assert_eq!(
            select("/data/x", &[("/", 1), ("/data", 2), ("/data", 9)]),
            Some(9)
        );
    }

    #[test]
    fn missing_data_dir_resolves_to_its_nearest_existing_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a").join("b");
        assert_eq!(
            nearest_existing_canonical(&nested),
            Some(dir.path().canonicalize().unwrap())
        );
    }

    #[cfg(unix)]
    #[test]
    fn symlinked_data_dir_resolves_to_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::create_dir(&target).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(
            nearest_existing_canonical(&link.join("not-yet")),
            Some(target.canonicalize().unwrap())
        );
    }

    #[test]
    fn relative_data_dir_is_measured_too() {
        assert!(free_bytes_for(Path::new("olc-data-that-does-not-exist")) > 0);
    }
}
