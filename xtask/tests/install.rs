//! The install path on small, locally built tarballs: no network. Downloads are tested
//! against a one-shot HTTP server on 127.0.0.1.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use xtask::install::{fetch, install_from_archive, Outcome};
use xtask::spec::{self, ArchiveSpec, ExpectedFile};
use xtask::verify::{check_extracted, md5_file};

const REC: usize = 3073;

/// A CIFAR-10-layout tarball: 5 train batches of 2 records, a test batch of 1 record.
/// `skip` leaves one file out.
fn build_tarball(path: &Path, skip: Option<&str>) -> Vec<u8> {
    let mut files: Vec<(String, Vec<u8>)> = (1..=5)
        .map(|b| (format!("data_batch_{b}.bin"), record_bytes(2, b as u8)))
        .collect();
    files.push(("test_batch.bin".into(), record_bytes(1, 9)));
    let names: String = data::CIFAR10_CLASS_NAMES
        .iter()
        .map(|n| format!("{n}\n"))
        .collect();
    files.push(("batches.meta.txt".into(), names.into_bytes()));
    files.push(("readme.html".into(), b"<html></html>".to_vec()));

    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (name, bytes) in files.iter().filter(|(n, _)| Some(n.as_str()) != skip) {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(
                &mut header,
                format!("cifar-10-batches-bin/{name}"),
                &bytes[..],
            )
            .unwrap();
    }
    let gz = builder.into_inner().unwrap().finish().unwrap();
    fs::write(path, &gz).unwrap();
    gz
}

fn record_bytes(n: usize, label: u8) -> Vec<u8> {
    (0..n * REC)
        .map(|k| if k % REC == 0 { label } else { (k % 256) as u8 })
        .collect()
}

/// The real CIFAR-10 spec, resized to the small tarball at `archive`.
fn small_spec(archive: &Path) -> ArchiveSpec {
    let mut s = spec::cifar10();
    s.md5 = md5_file(archive).unwrap();
    s.size = fs::metadata(archive).unwrap().len();
    s.url = dead_url();
    for f in &mut s.files {
        f.size = f.size.map(|_| {
            if f.name == "test_batch.bin" {
                REC as u64
            } else {
                2 * REC as u64
            }
        });
    }
    s
}

/// An http URL on a local port nobody listens on: connecting fails at once.
fn dead_url() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}/cifar-10-binary.tar.gz")
}

/// Serves `body` once; `send` bytes of it are actually sent (fewer = truncated).
fn serve_once(body: Vec<u8>, send: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut req = Vec::new();
        let mut b = [0u8; 1];
        while !req.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
            req.push(b[0]);
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(head.as_bytes());
        let _ = s.write_all(&body[..send]);
    });
    format!("http://127.0.0.1:{port}/cifar-10-binary.tar.gz")
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn installs_from_archive_and_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("small.tar.gz");
    build_tarball(&archive, None);
    let spec = small_spec(&archive);
    let dir = tmp.path().join("data");

    assert_eq!(
        install_from_archive(&archive, &dir, &spec).unwrap(),
        Outcome::Installed
    );
    check_extracted(&dir, &spec).unwrap();
    // Only the dataset directory remains: no temp dir left behind.
    assert_eq!(entries(&dir), vec![dir.join("cifar-10-batches-bin")]);
    // The data crate reads what was installed.
    let c = data::load(&dir, data::Dataset::Cifar10).unwrap();
    assert_eq!((c.train.len(), c.test.len()), (10, 1));
    assert_eq!(c.train.labels[2], 2);

    // Second time: nothing to do, even with no network (the URL is dead).
    let before = fs::metadata(dir.join("cifar-10-batches-bin/data_batch_1.bin"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(
        install_from_archive(&archive, &dir, &spec).unwrap(),
        Outcome::AlreadyInstalled
    );
    assert_eq!(fetch(&dir, &spec, None).unwrap(), Outcome::AlreadyInstalled);
    let after = fs::metadata(dir.join("cifar-10-batches-bin/data_batch_1.bin"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after);
}

#[test]
fn replaces_an_incomplete_installation() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("small.tar.gz");
    build_tarball(&archive, None);
    let spec = small_spec(&archive);
    let dir = tmp.path().join("data");
    let target = dir.join("cifar-10-batches-bin");
    fs::create_dir_all(&target).unwrap();
    fs::write(target.join("data_batch_1.bin"), b"partial").unwrap();
    assert!(check_extracted(&dir, &spec).is_err());

    assert_eq!(
        fetch(&dir, &spec, Some(&archive)).unwrap(),
        Outcome::Installed
    );
    check_extracted(&dir, &spec).unwrap();
    assert_eq!(entries(&dir), vec![target]);
}

#[test]
fn md5_mismatch_is_an_error_and_installs_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("small.tar.gz");
    build_tarball(&archive, None);
    let mut spec = small_spec(&archive);
    spec.md5 = "00000000000000000000000000000000".into();
    let dir = tmp.path().join("data");

    let msg = format!(
        "{:#}",
        install_from_archive(&archive, &dir, &spec).unwrap_err()
    );
    assert!(msg.contains("MD5") && msg.contains("small.tar.gz"), "{msg}");
    assert!(check_extracted(&dir, &spec).is_err());
    assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
}

#[test]
fn real_specs_reject_a_foreign_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("small.tar.gz");
    build_tarball(&archive, None);
    let dir = tmp.path().join("data");
    let msg = format!(
        "{:#}",
        fetch(&dir, &spec::cifar10(), Some(&archive)).unwrap_err()
    );
    assert!(msg.contains("170052171"), "{msg}");
    assert!(entries(&dir).is_empty());
}

#[test]
fn truncated_archive_is_an_error_and_installs_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full.tar.gz");
    let gz = build_tarball(&full, None);
    let full_spec = small_spec(&full);
    let dir = tmp.path().join("data");

    // Against the full archive's spec: the size check catches it.
    let cut = tmp.path().join("cut.tar.gz");
    fs::write(&cut, &gz[..gz.len() / 2]).unwrap();
    let msg = format!(
        "{:#}",
        install_from_archive(&cut, &dir, &full_spec).unwrap_err()
    );
    assert!(msg.contains("size"), "{msg}");

    // Even when size and MD5 "match" (spec built from the cut file), extraction fails
    // and nothing is left behind. Also cut just before the gzip trailer.
    for len in [gz.len() / 2, gz.len() - 4] {
        fs::write(&cut, &gz[..len]).unwrap();
        let spec = small_spec(&cut);
        let msg = format!("{:#}", install_from_archive(&cut, &dir, &spec).unwrap_err());
        assert!(msg.contains("corrupt or truncated"), "{len}: {msg}");
        assert!(check_extracted(&dir, &spec).is_err());
        assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
    }
}

#[test]
fn archive_without_an_expected_file_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("small.tar.gz");
    build_tarball(&archive, Some("test_batch.bin"));
    let mut spec = small_spec(&archive);
    spec.files.push(ExpectedFile {
        name: "test_batch.bin".into(),
        size: Some(REC as u64),
    });
    let dir = tmp.path().join("data");
    let msg = format!(
        "{:#}",
        install_from_archive(&archive, &dir, &spec).unwrap_err()
    );
    assert!(msg.contains("test_batch.bin"), "{msg}");
    assert!(entries(&dir).is_empty());
}

#[test]
fn offline_without_archive_says_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("small.tar.gz");
    build_tarball(&archive, None);
    let spec = small_spec(&archive);
    let dir = tmp.path().join("data");
    let msg = format!("{:#}", fetch(&dir, &spec, None).unwrap_err());
    assert!(
        msg.contains("--archive") && msg.contains(&spec.url),
        "{msg}"
    );
    assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
}

#[test]
fn downloads_verifies_extracts_and_keeps_the_tarball() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("small.tar.gz");
    let gz = build_tarball(&archive, None);
    let mut spec = small_spec(&archive);
    spec.url = serve_once(gz.clone(), gz.len());
    let dir = tmp.path().join("data");

    assert_eq!(fetch(&dir, &spec, None).unwrap(), Outcome::Installed);
    check_extracted(&dir, &spec).unwrap();
    let cached = dir.join("cifar-10-binary.tar.gz");
    assert_eq!(fs::read(&cached).unwrap(), gz);
    assert_eq!(
        entries(&dir),
        vec![dir.join("cifar-10-batches-bin"), cached.clone()]
    );

    // Extracted files lost: re-extracted from the kept tarball, no download (dead URL).
    fs::remove_dir_all(dir.join("cifar-10-batches-bin")).unwrap();
    spec.url = dead_url();
    assert_eq!(fetch(&dir, &spec, None).unwrap(), Outcome::Installed);
    check_extracted(&dir, &spec).unwrap();
}

#[test]
fn truncated_download_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("small.tar.gz");
    let gz = build_tarball(&archive, None);
    let mut spec = small_spec(&archive);
    spec.url = serve_once(gz.clone(), gz.len() / 2);
    let dir = tmp.path().join("data");

    assert!(fetch(&dir, &spec, None).is_err());
    assert!(check_extracted(&dir, &spec).is_err());
    assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
}

#[test]
fn official_specs_match_the_data_crate_layout() {
    let c10 = spec::cifar10();
    assert_eq!(c10.dir_name, "cifar-10-batches-bin");
    assert_eq!(c10.files.len(), 7);
    assert!(c10
        .files
        .iter()
        .any(|f| f.name == "data_batch_5.bin" && f.size == Some(30_730_000)));
    let c100 = spec::cifar100();
    assert!(c100
        .files
        .iter()
        .any(|f| f.name == "train.bin" && f.size == Some(153_700_000)));
    assert!(c100
        .files
        .iter()
        .any(|f| f.name == "test.bin" && f.size == Some(30_740_000)));
    assert_eq!(c100.md5, "03b5dce01913d631647c71ecec9e9cb8");
}

#[test]
fn cli_parses_and_rejects_archive_with_all() {
    use clap::Parser;
    use xtask::cli::{Cli, Command, DatasetArg};
    let cli = Cli::try_parse_from(["cargo xtask", "fetch-cifar", "--dataset", "cifar100"]).unwrap();
    let Command::FetchCifar(args) = &cli.command else {
        panic!("parsed as {:?}", cli.command);
    };
    assert_eq!(args.dataset, DatasetArg::Cifar100);
    assert_eq!(args.dir, PathBuf::from("data"));
    assert!(args.archive.is_none());

    let cli = Cli::try_parse_from([
        "cargo xtask",
        "fetch-cifar",
        "--dataset",
        "all",
        "--archive",
        "x.tar.gz",
    ])
    .unwrap();
    let msg = format!("{:#}", xtask::run(cli).unwrap_err());
    assert!(msg.contains("--dataset cifar10"), "{msg}");
    assert!(Cli::try_parse_from(["cargo xtask", "fetch-cifar", "--dataset", "mnist"]).is_err());
}

/// `cargo xtask cubins`: the default architectures are the prebuilt file's, `--arch` takes a
/// list, and a malformed one is refused before anything is compiled (without nvrtc: the check
/// comes first). The default output is where `target/*/train` looks: the target directory.
#[test]
fn cubins_parses_its_architectures_and_refuses_bad_ones_first() {
    use clap::Parser;
    use xtask::cli::{Cli, Command};
    let parse = |args: &[&str]| {
        let cli = Cli::try_parse_from([&["cargo xtask", "cubins"], args].concat()).unwrap();
        match cli.command {
            Command::Cubins(args) => args,
            other => panic!("parsed as {other:?}"),
        }
    };
    let defaults = parse(&[]);
    assert_eq!(defaults.arch, kernels::prebuilt::ARCHS);
    assert_eq!(defaults.out, None);
    let some = parse(&["--arch", "sm_90,compute_90", "--out", "k.bin"]);
    assert_eq!(some.arch, ["sm_90", "compute_90"]);
    assert_eq!(some.out, Some(PathBuf::from("k.bin")));
    for bad in ["sm90", "sm_90,90", "sm_90 -G"] {
        let cli = Cli::try_parse_from(["cargo xtask", "cubins", "--arch", bad]).unwrap();
        let msg = format!("{:#}", xtask::run(cli).unwrap_err());
        assert!(msg.contains("expected sm_XY or compute_XY"), "{bad}: {msg}");
    }
    let out = xtask::cubins::default_out();
    assert!(
        out.ends_with(Path::new("target").join(kernels::prebuilt::FILE_NAME))
            || std::env::var_os("CARGO_TARGET_DIR").is_some(),
        "{}",
        out.display()
    );
}
