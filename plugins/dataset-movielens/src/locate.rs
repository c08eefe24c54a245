//! Which folder a release is read from: an explicit `path`, else
//! `$FUNNEL_DATA_DIR/<variant>`, else the download cache, else a fresh
//! download into the cache.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::variant::Variant;

/// The environment variables resolution consults, captured once so tests
/// can supply their own instead of mutating the process environment.
#[derive(Debug, Clone, Default)]
pub(crate) struct Env {
    pub data_dir: Option<PathBuf>,
    pub xdg_cache_home: Option<PathBuf>,
    pub home: Option<PathBuf>,
}

impl Env {
    pub fn current() -> Env {
        // An empty variable means unset, as the XDG specification says.
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        Env { data_dir: var("FUNNEL_DATA_DIR"), xdg_cache_home: var("XDG_CACHE_HOME"), home: var("HOME") }
    }
}

/// Where downloads go when `cache_dir` is unset.
pub(crate) fn default_cache_dir(env: &Env) -> Result<PathBuf> {
    // XDG says a relative XDG_CACHE_HOME is invalid and must be ignored.
    if let Some(xdg) = env.xdg_cache_home.as_ref().filter(|p| p.is_absolute()) {
        return Ok(xdg.join("funnel/movielens"));
    }
    match &env.home {
        Some(home) => Ok(home.join(".cache/funnel/movielens")),
        None => bail!("neither XDG_CACHE_HOME nor HOME is set, so there is no download cache; set dataset.cache_dir"),
    }
}

/// Whether `dir` holds the release's ratings file.
pub(crate) fn holds(dir: &Path, variant: Variant) -> bool {
    dir.join(variant.ratings_file()).is_file()
}

/// Checks an explicit `dataset.path`.
pub(crate) fn check_explicit(dir: &Path, variant: Variant) -> Result<()> {
    if !dir.is_dir() {
        bail!("dataset.path `{}` does not exist or is not a directory", dir.display());
    }
    if !holds(dir, variant) {
        bail!(
            "dataset.path `{}` does not contain {} (expected MovieLens {variant} layout)",
            dir.display(),
            variant.ratings_file()
        );
    }
    Ok(())
}

/// The folder to read `variant` from; `download(cache_dir)` runs only when
/// no local copy exists and returns the folder it unpacked.
pub(crate) fn locate(
    variant: Variant,
    path: Option<&str>,
    cache_dir: Option<&str>,
    env: &Env,
    download: impl FnOnce(&Path) -> Result<PathBuf>,
) -> Result<PathBuf> {
    if let Some(path) = path {
        let dir = PathBuf::from(path);
        check_explicit(&dir, variant)?;
        return Ok(dir);
    }
    if let Some(dir) = env.data_dir.as_ref().map(|d| d.join(variant.name())).filter(|d| holds(d, variant)) {
        return Ok(dir);
    }
    let cache = match cache_dir {
        Some(c) => PathBuf::from(c),
        None => default_cache_dir(env)?,
    };
    let cached = cache.join(variant.name());
    if holds(&cached, variant) {
        return Ok(cached);
    }
    download(&cache)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn with_ratings(root: &Path, variant: Variant) -> PathBuf {
        let dir = root.join(variant.name());
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(variant.ratings_file()), "").unwrap();
        dir
    }

    fn no_download(_: &Path) -> Result<PathBuf> {
        panic!("download attempted")
    }

    #[test]
    fn explicit_path_wins_and_is_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = with_ratings(tmp.path(), Variant::Ml1m);
        let env = Env { data_dir: Some(tmp.path().join("elsewhere")), ..Env::default() };
        let got = locate(Variant::Ml1m, dir.to_str(), None, &env, no_download).unwrap();
        assert_eq!(got, dir);

        let e = locate(Variant::Ml100k, dir.to_str(), None, &env, no_download).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("dataset.path `{}` does not contain u.data (expected MovieLens ml-100k layout)", dir.display())
        );
        let e = locate(Variant::Ml1m, Some("/nonexistent/ml"), None, &env, no_download).unwrap_err();
        assert!(e.to_string().contains("`/nonexistent/ml` does not exist"), "{e}");
    }

    #[test]
    fn data_dir_then_cache_then_download() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let cache = tmp.path().join("cache");
        let env = Env { data_dir: Some(data.clone()), ..Env::default() };
        let cache_str = cache.to_str();

        // Nothing local: the download runs, into the configured cache.
        let got = locate(Variant::Ml1m, None, cache_str, &env, |c| {
            assert_eq!(c, cache);
            Ok(c.join("downloaded"))
        })
        .unwrap();
        assert_eq!(got, cache.join("downloaded"));

        let cached = with_ratings(&cache, Variant::Ml1m);
        assert_eq!(locate(Variant::Ml1m, None, cache_str, &env, no_download).unwrap(), cached);

        // A data-dir folder without the ratings file is passed over.
        fs::create_dir_all(data.join("ml-1m")).unwrap();
        assert_eq!(locate(Variant::Ml1m, None, cache_str, &env, no_download).unwrap(), cached);
        let in_data = with_ratings(&data, Variant::Ml1m);
        assert_eq!(locate(Variant::Ml1m, None, cache_str, &env, no_download).unwrap(), in_data);
    }

    #[test]
    fn default_cache_prefers_absolute_xdg_then_home() {
        let env = |xdg: Option<&str>, home: Option<&str>| Env {
            data_dir: None,
            xdg_cache_home: xdg.map(PathBuf::from),
            home: home.map(PathBuf::from),
        };
        assert_eq!(default_cache_dir(&env(Some("/x"), Some("/h"))).unwrap(), Path::new("/x/funnel/movielens"));
        assert_eq!(default_cache_dir(&env(Some("rel"), Some("/h"))).unwrap(), Path::new("/h/.cache/funnel/movielens"));
        assert_eq!(default_cache_dir(&env(None, Some("/h"))).unwrap(), Path::new("/h/.cache/funnel/movielens"));
        assert!(default_cache_dir(&env(None, None)).unwrap_err().to_string().contains("dataset.cache_dir"));
    }
}
