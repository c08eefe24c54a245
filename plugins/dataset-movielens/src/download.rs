//! Fetching an official MovieLens archive into the cache: download to a
//! temporary file, verify its sha256 against a pinned value, unzip into a
//! temporary folder, then rename that folder into place, so an interrupted
//! or corrupted download never leaves anything that looks complete.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::variant::Variant;

/// Where GroupLens serves the archives, as `<BASE_URL>/<variant>.zip`.
pub(crate) const BASE_URL: &str = "https://files.grouplens.org/datasets/movielens";

/// sha256 of each official archive, pinned so a changed or corrupted
/// download is refused rather than silently used.
///
/// Taken from tensorflow_datasets' `url_checksums/movielens.txt` (ml-100k,
/// ml-1m, ml-20m, ml-25m, ml-latest-small) and agreeing with several other
/// projects that pin the same archives. ml-latest is a rolling release; its
/// value is the one other projects pin for the snapshot whose README is dated
/// 2023-07-20. Should GroupLens replace an archive, the mismatch error prints
/// the new hash for a maintainer to check and pin here.
pub(crate) fn archive_sha256(variant: Variant) -> &'static str {
    match variant {
        Variant::Ml100k => "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        Variant::Ml1m => "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        Variant::Ml20m => "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
        Variant::Ml25m => "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
        Variant::MlLatest => "66a9e518c747d76b241d9a859b001a2619d3ed1672ceef599eb50daf73a7b4a3",
        Variant::MlLatestSmall => "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
    }
}

/// The official archive's address.
pub(crate) fn archive_url(variant: Variant) -> String {
    format!("{BASE_URL}/{}.zip", variant.name())
}

/// Lower-case hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex sha256 of a file, read in chunks.
pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Checks that the file at `path`, downloaded from `url`, hashes to
/// `expected`; the error names both hashes so a maintainer can judge a
/// changed upstream archive.
pub(crate) fn verify_sha256(path: &Path, url: &str, expected: &str) -> Result<()> {
    let actual = sha256_file(path)?;
    if actual != expected {
        bail!(
            "the archive downloaded from {url} has sha256 {actual}, but {expected} is pinned for it; \
             it was corrupted in transit or GroupLens changed it (a maintainer can check and pin the \
             new hash); meanwhile download and unzip it yourself and pass `--set dataset.path=DIR`"
        );
    }
    Ok(())
}

/// Downloads `url` (a zip holding `<folder>/<ratings_file>`), checks it
/// against `expected_sha256` and unpacks it as `<cache_dir>/<folder>`, which
/// it returns.
pub(crate) fn fetch(
    url: &str,
    expected_sha256: &str,
    cache_dir: &Path,
    folder: &str,
    ratings_file: &str,
    retry: Retry,
) -> Result<PathBuf> {
    fs::create_dir_all(cache_dir).with_context(|| format!("creating the download cache {}", cache_dir.display()))?;
    let target = cache_dir.join(folder);
    // Temporaries live in the cache itself so the final rename never crosses
    // file systems; they delete themselves on every early return.
    let mut archive = tempfile::Builder::new()
        .prefix(&format!(".{folder}-"))
        .suffix(".zip.part")
        .tempfile_in(cache_dir)
        .with_context(|| format!("creating a temporary file in {}", cache_dir.display()))?;
    let archive_path = archive.path().to_path_buf();
    eprintln!("downloading {url} into {}", cache_dir.display());
    download(url, archive.as_file_mut(), &archive_path, retry)?;
    verify_sha256(&archive_path, url, expected_sha256)?;

    let staging = tempfile::Builder::new()
        .prefix(&format!(".{folder}-"))
        .tempdir_in(cache_dir)
        .with_context(|| format!("creating a temporary folder in {}", cache_dir.display()))?;
    let file = archive.as_file_mut();
    file.seek(SeekFrom::Start(0)).with_context(|| format!("rewinding {}", archive_path.display()))?;
    let mut zip = zip::ZipArchive::new(&mut *file).with_context(|| format!("{url} is not a readable zip archive"))?;
    // `extract` refuses entries that would land outside the folder.
    zip.extract(staging.path()).with_context(|| format!("unpacking {url} into {}", staging.path().display()))?;
    let extracted = [staging.path().join(folder), staging.path().to_path_buf()]
        .into_iter()
        .find(|d| d.join(ratings_file).is_file())
        .ok_or_else(|| anyhow!("the archive {url} holds no {folder}/{ratings_file}"))?;
    match fs::rename(&extracted, &target) {
        Ok(()) => Ok(target),
        // Another process unpacked the same archive first: use its copy.
        Err(_) if target.join(ratings_file).is_file() => Ok(target),
        Err(e) => Err(e).with_context(|| {
            format!("moving the unpacked archive into {} (remove that folder if it is a leftover)", target.display())
        }),
    }
}

/// How often and how patiently a download is retried.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    pub attempts: u32,
    /// Wait before the second attempt; doubled before each later one.
    pub delay: Duration,
}

impl Retry {
    pub(crate) const DEFAULT: Retry = Retry { attempts: 4, delay: Duration::from_secs(2) };
}

/// Streams `url` into `out` (the temporary file at `out_path`). A transfer
/// that breaks off is retried, continuing where it stopped (an HTTP range
/// request) when the server allows it and starting over otherwise.
fn download(url: &str, out: &mut File, out_path: &Path, retry: Retry) -> Result<()> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(120))
        .build();
    let mut written: u64 = 0;
    let mut last_error = String::new();
    for attempt in 1..=retry.attempts.max(1) {
        if attempt > 1 {
            let wait = retry.delay * 2u32.pow(attempt - 2);
            eprintln!(
                "download interrupted ({last_error}); retrying in {wait:?} (attempt {attempt} of {})",
                retry.attempts
            );
            std::thread::sleep(wait);
        }
        let mut request = agent.get(url);
        if written > 0 {
            request = request.set("Range", &format!("bytes={written}-"));
        }
        let response = match request.call() {
            Ok(r) => r,
            Err(e) => {
                last_error = e.to_string();
                continue;
            }
        };
        if written > 0 && response.status() != 206 {
            // The server ignored the range: start the file over.
            out.set_len(0)
                .and_then(|_| out.seek(SeekFrom::Start(0)))
                .with_context(|| format!("rewinding {}", out_path.display()))?;
            written = 0;
        }
        let mut body = response.into_reader();
        let mut buf = vec![0u8; 1 << 20];
        let finished = loop {
            match body.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => {
                    out.write_all(&buf[..n]).with_context(|| format!("writing {}", out_path.display()))?;
                    written += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    last_error = e.to_string();
                    break false;
                }
            }
        };
        if finished {
            out.flush().with_context(|| format!("writing {}", out_path.display()))?;
            return Ok(());
        }
    }
    bail!(
        "downloading {url} failed after {} attempts: {last_error}; without network access, download and unzip \
         the archive elsewhere and pass `--set dataset.path=DIR`",
        retry.attempts
    )
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Cursor};
    use std::net::TcpListener;
    use std::thread;

    use zip::write::SimpleFileOptions;

    use super::*;

    const QUICK: Retry = Retry { attempts: 3, delay: Duration::from_millis(10) };

    #[test]
    fn a_broken_transfer_is_resumed_with_a_range_request() {
        let body = zip_of(&[("ml-test/ratings.dat", b"1::2::5::3\n1::3::4::4\n"), ("ml-test/movies.dat", b"2::T::\n")]);
        let sha = hex(&Sha256::digest(&body));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/ml-test.zip", listener.local_addr().unwrap());
        let half = body.len() / 2;
        let served = body.clone();
        let server = thread::spawn(move || {
            let mut ranges = Vec::new();
            for attempt in 0..2 {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let mut range = None;
                while reader.read_line(&mut line).unwrap() > 2 {
                    if let Some(r) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        range = Some(r.trim().trim_end_matches('-').parse::<usize>().unwrap());
                    }
                    line.clear();
                }
                ranges.push(range);
                let mut stream = stream;
                if attempt == 0 {
                    // Promise everything, send half, hang up.
                    write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", served.len())
                        .unwrap();
                    stream.write_all(&served[..half]).unwrap();
                } else {
                    let from = range.unwrap_or(0);
                    write!(
                        stream,
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\nConnection: close\r\n\r\n",
                        served.len() - from,
                        served.len() - 1,
                        served.len()
                    )
                    .unwrap();
                    stream.write_all(&served[from..]).unwrap();
                }
            }
            ranges
        });
        let cache = tempfile::tempdir().unwrap();
        let dir = fetch(&url, &sha, cache.path(), "ml-test", "ratings.dat", QUICK).unwrap();
        assert_eq!(fs::read(dir.join("ratings.dat")).unwrap(), b"1::2::5::3\n1::3::4::4\n");
        assert_eq!(server.join().unwrap(), vec![None, Some(half)]);
    }

    #[test]
    fn sha256_of_a_file_and_its_verification() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        fs::write(&path, b"abc").unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_file(&path).unwrap(), abc);
        verify_sha256(&path, "http://x/abc.zip", abc).unwrap();
        let e = verify_sha256(&path, "http://x/abc.zip", &"0".repeat(64)).unwrap_err().to_string();
        assert!(e.contains(abc) && e.contains("http://x/abc.zip") && e.contains("dataset.path"), "{e}");
    }

    #[test]
    fn every_variant_has_a_well_formed_pin() {
        for v in Variant::ALL {
            let h = archive_sha256(v);
            assert!(h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{v}");
            assert_eq!(archive_url(v), format!("https://files.grouplens.org/datasets/movielens/{v}.zip"));
        }
    }

    fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data) in files {
            w.start_file(*name, SimpleFileOptions::default()).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    /// Serves `body` to one HTTP request on localhost; returns the URL.
    fn serve_once(body: Vec<u8>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/ml-test.zip", listener.local_addr().unwrap());
        thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            let mut stream = stream;
            write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).unwrap();
            stream.write_all(&body).unwrap();
        });
        url
    }

    #[test]
    fn fetch_verifies_unpacks_and_moves_into_place() {
        let body = zip_of(&[("ml-test/ratings.dat", b"1::2::5::3\n"), ("ml-test/movies.dat", b"2::T::\n")]);
        let sha = hex(&Sha256::digest(&body));
        let cache = tempfile::tempdir().unwrap();
        let dir = fetch(&serve_once(body), &sha, cache.path(), "ml-test", "ratings.dat", QUICK).unwrap();
        assert_eq!(dir, cache.path().join("ml-test"));
        assert_eq!(fs::read(dir.join("ratings.dat")).unwrap(), b"1::2::5::3\n");
        // Nothing temporary is left beside the result.
        let names: Vec<_> = fs::read_dir(cache.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["ml-test"]);
    }

    #[test]
    fn a_wrong_hash_leaves_nothing_behind() {
        let body = zip_of(&[("ml-test/ratings.dat", b"1::2::5::3\n")]);
        let actual = hex(&Sha256::digest(&body));
        let cache = tempfile::tempdir().unwrap();
        let e = fetch(&serve_once(body), &"f".repeat(64), cache.path(), "ml-test", "ratings.dat", QUICK).unwrap_err();
        assert!(e.to_string().contains(&actual), "{e}");
        assert_eq!(fs::read_dir(cache.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_archive_without_the_ratings_file_is_refused() {
        let body = zip_of(&[("other/readme.txt", b"hi")]);
        let sha = hex(&Sha256::digest(&body));
        let cache = tempfile::tempdir().unwrap();
        let e = fetch(&serve_once(body), &sha, cache.path(), "ml-test", "ratings.dat", QUICK).unwrap_err();
        assert!(e.to_string().contains("holds no ml-test/ratings.dat"), "{e}");
        assert_eq!(fs::read_dir(cache.path()).unwrap().count(), 0);
    }

    #[test]
    fn network_failure_names_the_url_and_the_way_out() {
        // Bind then drop a listener: its port now refuses connections.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/ml-1m.zip");
        let cache = tempfile::tempdir().unwrap();
        let e = fetch(&url, &"0".repeat(64), cache.path(), "ml-1m", "ratings.dat", QUICK).unwrap_err().to_string();
        assert!(e.contains(&url) && e.contains("--set dataset.path=DIR"), "{e}");
        assert_eq!(fs::read_dir(cache.path()).unwrap().count(), 0);
    }
}
