//! Streaming an HTTP(S) download to disk with a progress bar.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

/// Downloads `url` into `dest` (created or overwritten). `expected_size` sizes the bar
/// when the server sends no Content-Length. The caller verifies the result.
///
/// A failure to connect is reported with the offline workaround (`--archive`), since
/// that is the likely cause on machines without internet access.
pub fn download(url: &str, dest: &Path, expected_size: u64) -> anyhow::Result<()> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(20))
        .timeout_read(Duration::from_secs(60))
        .build();
    let response = match agent.get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, _)) => {
            anyhow::bail!("{url}: server answered HTTP {code}; {}", offline_hint(url))
        }
        Err(e) => anyhow::bail!("download failed ({e}); {}", offline_hint(url)),
    };
    let total = response
        .header("Content-Length")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(expected_size);

    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(
        dest.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );

    let file = File::create(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let mut out = BufWriter::new(file);
    let mut reader = response.into_reader();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader
            .read(&mut buf)
            .with_context(|| format!("download of {url} interrupted"))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])
            .with_context(|| format!("cannot write {}", dest.display()))?;
        bar.inc(n as u64);
    }
    let file = out
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("cannot write {}", dest.display()))?;
    file.sync_all()
        .with_context(|| format!("cannot write {}", dest.display()))?;
    bar.finish();
    Ok(())
}

fn offline_hint(url: &str) -> String {
    format!(
        "if this machine is offline, download {url} elsewhere, copy it here and run \
         `cargo xtask fetch-cifar --archive PATH` (with the matching --dataset)"
    )
}
