//! Normalisation statistics, augmentation, seeded sampling and the batch loader.

use std::collections::HashSet;

use data::{
    epoch_order, sample_aug, write_sample, Loader, Normalization, SampleAug, Split, IMAGE_BYTES,
};

const P: usize = 1024;

fn split_of(images: Vec<Vec<u8>>) -> Split {
    let n = images.len();
    Split {
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
        images: images.concat(),
        coarse_labels: None,
    }
}

/// Pixel (c, y, x) = distinct-ish value so shifts are visible.
fn pattern() -> Vec<u8> {
    (0..IMAGE_BYTES)
        .map(|k| {
            let (c, y, x) = (k / P, (k % P) / 32, k % 32);
            (c * 80 + y * 2 + x) as u8 + 1 // never 0, so padding is distinguishable
        })
        .collect()
}

fn at(out: &[f32], c: usize, y: usize, x: usize) -> f32 {
    out[c * P + y * 32 + x]
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-5 * (1.0 + b.abs())
}

#[test]
fn normalization_on_hand_made_split() {
    // Two images. Channel 0: all 0 in one, all 255 in the other -> mean 0.5, std 0.5.
    // Channel 1: 51 everywhere -> mean 0.2, constant -> std reported as 1.
    // Channel 2: half the pixels 0 and half 255 in each image -> mean 0.5, std 0.5.
    let mk = |r: u8| {
        let mut v = vec![r; P];
        v.extend(vec![51u8; P]);
        v.extend((0..P).map(|k| if k % 2 == 0 { 0 } else { 255 }));
        v
    };
    let n = Normalization::from_split(&split_of(vec![mk(0), mk(255)]));
    assert!(close(n.mean[0], 0.5) && close(n.std[0], 0.5), "{n:?}");
    assert!(close(n.mean[1], 0.2) && n.std[1] == 1.0, "{n:?}");
    assert!(close(n.mean[2], 0.5) && close(n.std[2], 0.5), "{n:?}");

    // A less symmetric case: channel 0 values {0, 102} -> [0, 0.4]: mean 0.2, std 0.2.
    let mut a = vec![0u8; IMAGE_BYTES];
    a[..P].fill(102);
    let n = Normalization::from_split(&split_of(vec![a, vec![0; IMAGE_BYTES]]));
    assert!(close(n.mean[0], 0.2) && close(n.std[0], 0.2), "{n:?}");
    assert_eq!(
        Normalization::from_split(&Split::default()),
        Normalization::IDENTITY
    );
}

fn norm() -> Normalization {
    Normalization {
        mean: [0.4, 0.5, 0.6],
        std: [0.2, 0.25, 0.3],
    }
}

fn expect(img: &[u8], c: usize, y: i32, x: i32, n: &Normalization) -> f32 {
    let p = if (0..32).contains(&y) && (0..32).contains(&x) {
        img[c * P + y as usize * 32 + x as usize] as f32
    } else {
        0.0
    };
    (p / 255.0 - n.mean[c]) / n.std[c]
}

#[test]
fn identity_aug_reproduces_normalised_pixels() {
    let img = pattern();
    let n = norm();
    let mut out = vec![0f32; IMAGE_BYTES];
    write_sample(&img, SampleAug::IDENTITY, &n, &mut out);
    for c in 0..3 {
        for y in 0..32 {
            for x in 0..32 {
                let want = (img[c * P + y * 32 + x] as f32 / 255.0 - n.mean[c]) / n.std[c];
                assert!(close(at(&out, c, y, x), want), "c{c} y{y} x{x}");
            }
        }
    }
}

#[test]
fn crop_shifts_with_zero_padding() {
    let img = pattern();
    let n = norm();
    let mut out = vec![0f32; IMAGE_BYTES];
    let aug = SampleAug {
        dx: 3,
        dy: -2,
        flip: false,
    };
    write_sample(&img, aug, &n, &mut out);
    // Hand-computed points: out(y, x) = img(y - 2, x + 3).
    // (c=1, y=5, x=0) <- img(1, 3, 3) = 80 + 6 + 3 + 1 = 90.
    assert!(close(at(&out, 1, 5, 0), (90.0 / 255.0 - 0.5) / 0.25));
    // Top two rows come from y = -2, -1: padding, i.e. raw 0 -> -mean/std.
    for x in 0..32 {
        assert!(close(at(&out, 0, 0, x), -0.4 / 0.2));
        assert!(close(at(&out, 2, 1, x), -0.6 / 0.3));
    }
    // Right three columns come from x = 32..34: padding.
    for y in 2..32 {
        for x in 29..32 {
            assert!(close(at(&out, 0, y, x), -2.0));
        }
        // Column 28 is still inside: img(0, y-2, 31) = 2(y-2) + 31 + 1.
        let v = (2 * (y - 2) + 32) as f32;
        assert!(close(at(&out, 0, y, 28), (v / 255.0 - 0.4) / 0.2));
    }
    // Everything agrees with the documented formula.
    for c in 0..3 {
        for y in 0..32 {
            for x in 0..32 {
                let want = expect(&img, c, y + aug.dy, x + aug.dx, &n);
                assert!(close(at(&out, c, y as usize, x as usize), want));
            }
        }
    }
}

#[test]
fn flip_mirrors_and_equals_flip_then_mirrored_crop() {
    let img = pattern();
    let n = norm();
    let mut plain = vec![0f32; IMAGE_BYTES];
    let mut flipped = vec![0f32; IMAGE_BYTES];
    write_sample(&img, SampleAug::IDENTITY, &n, &mut plain);
    write_sample(
        &img,
        SampleAug {
            dx: 0,
            dy: 0,
            flip: true,
        },
        &n,
        &mut flipped,
    );
    for c in 0..3 {
        for y in 0..32 {
            for x in 0..32 {
                assert_eq!(at(&flipped, c, y, x), at(&plain, c, y, 31 - x));
            }
        }
    }
    // Crop then flip (our convention) == flip the raw image then crop at (-dx, dy).
    let mut raw_flipped = img.clone();
    for row in raw_flipped.chunks_exact_mut(32) {
        row.reverse();
    }
    for (dx, dy) in [(4, -3), (-4, 4), (1, 0)] {
        let mut a = vec![0f32; IMAGE_BYTES];
        let mut b = vec![0f32; IMAGE_BYTES];
        write_sample(&img, SampleAug { dx, dy, flip: true }, &n, &mut a);
        write_sample(
            &raw_flipped,
            SampleAug {
                dx: -dx,
                dy,
                flip: false,
            },
            &n,
            &mut b,
        );
        assert_eq!(a, b, "dx {dx} dy {dy}");
        // And it matches the documented formula: out(y, x) = P(y + dy, 31 - x + dx).
        assert!(close(
            at(&a, 2, 10, 3),
            expect(&img, 2, 10 + dy, 28 + dx, &n)
        ));
        // Padding appears on the left when dx > 0 (the crop's right edge, mirrored).
        if dx > 0 {
            assert!(close(at(&a, 0, 20, 0), -2.0));
        }
    }
}

#[test]
fn epoch_order_is_a_deterministic_permutation() {
    let n = 1000;
    let a = epoch_order(n, true, 7, 0);
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..n).collect::<Vec<_>>());
    assert_eq!(a, epoch_order(n, true, 7, 0));
    assert_ne!(a, epoch_order(n, true, 7, 1));
    assert_ne!(a, epoch_order(n, true, 8, 0));
    assert_ne!(a, (0..n).collect::<Vec<_>>());
    assert_eq!(epoch_order(n, false, 7, 3), (0..n).collect::<Vec<_>>());
    assert!(epoch_order(0, true, 1, 1).is_empty());
}

#[test]
fn sample_aug_is_deterministic_and_covers_the_range() {
    let mut seen_dx = HashSet::new();
    let mut seen_dy = HashSet::new();
    let mut flips = 0;
    for pos in 0..2000 {
        let a = sample_aug(3, 2, pos);
        assert_eq!(a, sample_aug(3, 2, pos));
        assert!((-4..=4).contains(&a.dx) && (-4..=4).contains(&a.dy));
        seen_dx.insert(a.dx);
        seen_dy.insert(a.dy);
        flips += a.flip as usize;
    }
    assert_eq!((seen_dx.len(), seen_dy.len()), (9, 9));
    assert!((850..1150).contains(&flips), "{flips}");
    let e2: Vec<_> = (0..50).map(|p| sample_aug(3, 2, p)).collect();
    let e3: Vec<_> = (0..50).map(|p| sample_aug(3, 3, p)).collect();
    assert_ne!(e2, e3);
}

fn numbered_split(n: usize) -> Split {
    split_of(
        (0..n)
            .map(|i| vec![(i * 3 % 256) as u8; IMAGE_BYTES])
            .collect(),
    )
}

#[test]
fn loader_covers_every_index_once_with_partial_last_batch() {
    let split = numbered_split(23);
    let loader = Loader::new(&split, 5, true, true, Normalization::IDENTITY, 11);
    assert_eq!(loader.batches_per_epoch(), 5);
    let batches: Vec<_> = loader.epoch(0).collect();
    assert_eq!(
        batches.iter().map(|b| b.len()).collect::<Vec<_>>(),
        vec![5, 5, 5, 5, 3]
    );
    let mut all: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(all, epoch_order(23, true, 11, 0));
    all.sort_unstable();
    assert_eq!(all, (0..23).collect::<Vec<_>>());
    for b in &batches {
        assert_eq!(b.images.len(), b.len() * IMAGE_BYTES);
        for (j, &i) in b.indices.iter().enumerate() {
            assert_eq!(b.labels[j], split.labels[i] as usize);
        }
    }
}

#[test]
fn loader_is_deterministic_and_matches_write_sample() {
    let split = numbered_split(10);
    let n = norm();
    let l = Loader::new(&split, 4, true, true, n, 5);
    let e0: Vec<_> = l.epoch(0).collect();
    assert_eq!(e0, l.epoch(0).collect::<Vec<_>>());
    // The rest of an epoch after its first k batches is those batches of the whole epoch.
    for k in 0..=3 {
        assert_eq!(
            l.epoch_from(0, k).collect::<Vec<_>>(),
            e0[k..],
            "from batch {k}"
        );
    }
    let e1: Vec<_> = l.epoch(1).collect();
    assert_ne!(
        e0.iter()
            .flat_map(|b| b.indices.clone())
            .collect::<Vec<_>>(),
        e1.iter()
            .flat_map(|b| b.indices.clone())
            .collect::<Vec<_>>()
    );
    // Batch contents are exactly write_sample with the per-position augmentation, so
    // they do not depend on batch size or thread scheduling.
    let l7 = Loader::new(&split, 7, true, true, n, 5);
    let flat = |bs: Vec<data::Batch>| bs.into_iter().flat_map(|b| b.images).collect::<Vec<_>>();
    let images = flat(e0);
    assert_eq!(images, flat(l7.epoch(0).collect()));
    let order = epoch_order(10, true, 5, 0);
    for (pos, &idx) in order.iter().enumerate() {
        let mut want = vec![0f32; IMAGE_BYTES];
        write_sample(split.image(idx), sample_aug(5, 0, pos), &n, &mut want);
        assert_eq!(
            &images[pos * IMAGE_BYTES..(pos + 1) * IMAGE_BYTES],
            &want[..]
        );
    }
    // Evaluation loader: in order, no augmentation.
    let eval = Loader::new(&split, 3, false, false, n, 5);
    let b = eval.epoch(4).next().unwrap();
    assert_eq!(b.indices, vec![0, 1, 2]);
    let mut want = vec![0f32; IMAGE_BYTES];
    write_sample(split.image(1), SampleAug::IDENTITY, &n, &mut want);
    assert_eq!(&b.images[IMAGE_BYTES..2 * IMAGE_BYTES], &want[..]);
}
