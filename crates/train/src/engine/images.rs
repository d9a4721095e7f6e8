//! Image files for `train predict`: a PNG or JPEG read whole, resized to CIFAR's 32x32 planes.
//!
//! Decoders are lenient: given the first third of a JPEG, the `image` crate fills in the rest
//! and returns a picture. A damaged file must be an error by name instead, so before decoding
//! the file's structure is walked to its end marker: a JPEG's segments and scans up to EOI, a
//! PNG's chunks up to a whole IEND. What a decoder then still refuses is an error too.

use anyhow::{bail, Context, Result};
use data::IMAGE_BYTES;
use image::imageops::FilterType;
use image::ImageFormat;
use std::path::Path;

/// An image as CIFAR stores one: 32x32, CHW, 8-bit RGB; and its original size.
#[derive(Debug)]
pub struct Decoded {
    pub chw: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Reads and resizes one PNG or JPEG. The error names the file and says what is wrong.
pub fn decode(path: &Path) -> Result<Decoded> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read image {}", path.display()))?;
    decode_bytes(&bytes, path)
}

/// [`decode`] of a file's bytes (`path` names it in errors).
fn decode_bytes(bytes: &[u8], path: &Path) -> Result<Decoded> {
    let what = || format!("cannot read image {}", path.display());
    // By the bytes, not the file name: a text file called `x.jpg` is not a JPEG.
    let format = image::guess_format(bytes).ok();
    let whole = match format {
        Some(ImageFormat::Png) => png_is_whole(bytes),
        Some(ImageFormat::Jpeg) => jpeg_is_whole(bytes),
        _ => bail!(
            "{}: not a PNG or JPEG file{}",
            what(),
            format.map_or(String::new(), |f| format!(" (it looks like {f:?})"))
        ),
    };
    if !whole {
        bail!(
            "{}: truncated or damaged: the file ends before its image does",
            what()
        );
    }
    let img = image::load_from_memory(bytes)
        .with_context(|| format!("{}: the file is damaged or not a whole image", what()))?;
    let (width, height) = (img.width(), img.height());
    let small = image::imageops::resize(&img.to_rgb8(), 32, 32, FilterType::Triangle);
    // RGB interleaved (HWC) to CIFAR's planes (CHW).
    let mut chw = vec![0u8; IMAGE_BYTES];
    for (i, px) in small.pixels().enumerate() {
        for c in 0..3 {
            chw[c * 1024 + i] = px[c];
        }
    }
    Ok(Decoded { chw, width, height })
}

/// A PNG's chunks (length, type, data, CRC) run whole from the signature to a whole `IEND`.
/// (The decoder checks each chunk's CRC.)
fn png_is_whole(b: &[u8]) -> bool {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if !b.starts_with(SIGNATURE) {
        return false;
    }
    let mut at = SIGNATURE.len();
    while let Some(head) = b.get(at..at + 8) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let Some(end) = at.checked_add(12 + len).filter(|&e| e <= b.len()) else {
            return false;
        };
        if &head[4..] == b"IEND" {
            return true;
        }
        at = end;
    }
    false
}

/// A JPEG runs from SOI through whole segments and scans to its EOI marker. A scan's
/// entropy-coded data ends at the first marker that is not a stuffed `FF 00` or a restart
/// (`FF D0`..`FF D7`). Bytes after EOI (some cameras append a trailer) are not looked at;
/// stray bytes before a marker are skipped, as decoders do.
fn jpeg_is_whole(b: &[u8]) -> bool {
    if !b.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let mut at = 2;
    loop {
        // The next marker: 0xFF, any fill 0xFFs, then its code.
        while b.get(at).is_some_and(|&v| v != 0xFF) {
            at += 1;
        }
        while b.get(at) == Some(&0xFF) {
            at += 1;
        }
        let Some(&code) = b.get(at) else {
            return false;
        };
        at += 1;
        match code {
            0xD9 => return true,
            // Markers without a segment.
            0x00 | 0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let Some(len) = b
            .get(at..at + 2)
            .map(|l| u16::from_be_bytes([l[0], l[1]]) as usize)
        else {
            return false;
        };
        at += len;
        if len < 2 || at > b.len() {
            return false;
        }
        if code == 0xDA {
            // Start of scan: skip its entropy-coded data.
            loop {
                while b.get(at).is_some_and(|&v| v != 0xFF) {
                    at += 1;
                }
                match b.get(at + 1) {
                    None => return false,
                    Some(0x00 | 0xD0..=0xD7) => at += 2,
                    Some(0xFF) => at += 1,
                    Some(_) => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64x48 picture with detail everywhere (so every part of the file carries image data).
    fn picture() -> image::RgbImage {
        image::RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x * y) % 256) as u8])
        })
    }

    fn encoded(format: ImageFormat) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        picture().write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn an_image_is_resized_whole_to_cifar_planes() {
        let dir = tempfile::tempdir().unwrap();
        // 64x48: left half red, right half blue.
        let img = image::RgbImage::from_fn(64, 48, |x, _| {
            if x < 32 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 255])
            }
        });
        let path = dir.path().join("half.png");
        img.save(&path).unwrap();
        let d = decode(&path).unwrap();
        assert_eq!((d.width, d.height, d.chw.len()), (64, 48, 3072));
        // Red plane: left columns 255, right columns 0; blue the other way round.
        let (r, b) = (&d.chw[..1024], &d.chw[2048..]);
        assert_eq!((r[5 * 32 + 2], r[5 * 32 + 29]), (255, 0));
        assert_eq!((b[5 * 32 + 2], b[5 * 32 + 29]), (0, 255));
        let e = format!("{:#}", decode(&dir.path().join("none.png")).unwrap_err());
        assert!(e.contains("none.png"), "{e}");
    }

    /// Every cut of a PNG and of a JPEG, at every byte, is refused by name (the decoder alone
    /// accepted 1378 of the JPEG's 2000 cuts and the PNG cut inside IEND); the whole files,
    /// and a JPEG with a trailer after its EOI, are read. (Each cut is decoded from memory; a
    /// few go through a file too.)
    #[test]
    fn every_truncation_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for (format, name) in [(ImageFormat::Png, "p.png"), (ImageFormat::Jpeg, "j.jpg")] {
            let bytes = encoded(format);
            let path = dir.path().join(name);
            std::fs::write(&path, &bytes).unwrap();
            assert_eq!(decode(&path).unwrap().width, 64);
            for cut in 1..bytes.len() {
                let e = format!("{:#}", decode_bytes(&bytes[..cut], &path).unwrap_err());
                assert!(e.contains(name), "{e}");
                if cut > 16 {
                    assert!(e.contains("truncated or damaged"), "cut {cut}: {e}");
                }
            }
            for cut in [bytes.len() / 3, bytes.len() - 1] {
                std::fs::write(&path, &bytes[..cut]).unwrap();
                let e = format!("{:#}", decode(&path).unwrap_err());
                assert!(
                    e.contains(name) && e.contains("truncated or damaged"),
                    "{e}"
                );
            }
        }
        let mut trailer = encoded(ImageFormat::Jpeg);
        trailer.extend_from_slice(b"SEFHtrailer after the end of the image");
        let path = dir.path().join("trailer.jpg");
        std::fs::write(&path, &trailer).unwrap();
        assert_eq!(decode(&path).unwrap().height, 48);
    }

    #[test]
    fn the_walks_follow_the_formats() {
        let png = encoded(ImageFormat::Png);
        let jpeg = encoded(ImageFormat::Jpeg);
        assert!(png_is_whole(&png) && jpeg_is_whole(&jpeg));
        // A chunk length that runs past the end; a segment length below its own 2 bytes.
        let mut long = png.clone();
        long[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(!png_is_whole(&long));
        let mut short = jpeg.clone();
        short[4..6].copy_from_slice(&[0, 1]);
        assert!(!jpeg_is_whole(&short));
        // Stuffed zeros and restart markers inside a scan do not end it; EOI does.
        let scan = [
            0xFF, 0xD8, 0xFF, 0xDA, 0, 2, 1, 0xFF, 0, 2, 0xFF, 0xD3, 4, 0xFF, 0xD9,
        ];
        assert!(jpeg_is_whole(&scan));
        assert!(!jpeg_is_whole(&scan[..scan.len() - 1]));
    }
}
