//! `train predict --checkpoint C IMAGE...`: PNG or JPEG of any size, the top-5 classes with
//! probabilities named as the checkpoint's dataset names them; bad files named.

use crate::common::*;
use train::engine::checkpoint;

const NAMES: [&str; 10] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett",
];

/// (class name, probability in %) of each listed line under `file`'s heading.
fn listed(out: &str, file: &str) -> Vec<(String, f64)> {
    let mut lines = out.lines().skip_while(|l| !l.starts_with(file));
    let heading = lines
        .next()
        .unwrap_or_else(|| panic!("no {file} in: {out}"));
    assert!(heading.ends_with("):"), "{heading}");
    lines
        .take_while(|l| l.starts_with("  "))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[1].to_string(),
                f[2].trim_end_matches('%').parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn predict_lists_the_top_5_classes_with_the_checkpoints_names_and_the_models_probabilities() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10(&tmp.path().join("data"), 24, 1, Some(&NAMES));
    let ck = tmp.path().join("ck.st");
    ok(&small(&[
        "--data-dir",
        p(&data),
        "--epochs",
        "2",
        "--save",
        p(&ck),
    ]));
    // The names travel with the checkpoint: the data can be gone.
    let test_images = data::load(&data, data::Dataset::Cifar10).unwrap().test;
    std::fs::remove_dir_all(&data).unwrap();

    // A test image as a 32x32 PNG (resizing 32 to 32 keeps it as it is), and large ones.
    let rgb = |i: usize| {
        let chw = test_images.image(i);
        image::RgbImage::from_fn(32, 32, |x, y| {
            let at = (y * 32 + x) as usize;
            image::Rgb([chw[at], chw[1024 + at], chw[2048 + at]])
        })
    };
    let small_png = tmp.path().join("test0.png");
    rgb(0).save(&small_png).unwrap();
    let big_jpg = tmp.path().join("big.jpg");
    image::imageops::resize(&rgb(1), 640, 480, image::imageops::FilterType::Nearest)
        .save(&big_jpg)
        .unwrap();
    let wide_png = tmp.path().join("wide.png");
    image::imageops::resize(&rgb(2), 1000, 90, image::imageops::FilterType::Nearest)
        .save(&wide_png)
        .unwrap();

    let out = ok(&[
        "predict",
        "--checkpoint",
        p(&ck),
        p(&small_png),
        p(&big_jpg),
        p(&wide_png),
    ]);
    assert!(
        out.contains("test0.png (32x32):")
            && out.contains("big.jpg (640x480):")
            && out.contains("wide.png (1000x90):"),
        "{out}"
    );
    for file in [p(&small_png), p(&big_jpg), p(&wide_png)] {
        let top = listed(&out, file);
        assert_eq!(top.len(), 5, "{out}");
        assert!(
            top.iter().all(|(n, _)| NAMES.contains(&n.as_str())),
            "{out}"
        );
        assert!(
            top.windows(2).all(|w| w[0].1 >= w[1].1),
            "not descending: {out}"
        );
        let sum: f64 = top.iter().map(|t| t.1).sum();
        assert!(sum > 0.0 && sum <= 100.01, "{out}");
    }

    // The 32x32 PNG's probabilities are the model's softmax of that test image, computed here
    // through the library.
    let (tensors, meta) = checkpoint::load(&ck).unwrap();
    let config = train::engine::state::config_from_metadata(&meta).unwrap();
    let mut net = model::ResNet::new(&config, 0);
    train::engine::state::load_model_tensors(&mut net, &tensors, false).unwrap();
    let norm = train::engine::snapshot::norm_from_string(&meta["normalization"]).unwrap();
    let mut x = vec![0f32; data::SAMPLE_LEN];
    data::write_sample(
        test_images.image(0),
        data::SampleAug::IDENTITY,
        &norm,
        &mut x,
    );
    let logits = net
        .forward(
            &tensor::Tensor::from_vec(&[1, 3, 32, 32], x),
            model::Mode::Eval,
        )
        .to_vec()
        .unwrap();
    let want = train::commands::predict::top_k(&logits, 10, 5);
    let got = listed(&out, p(&small_png));
    for ((class, prob), (name, shown)) in want[0].iter().zip(&got) {
        assert_eq!(NAMES[*class], name, "{out}");
        assert!(
            (100.0 * prob - shown).abs() < 0.006,
            "{prob} vs {shown}%: {out}"
        );
    }
    // --top K lists K.
    let out = ok(&["predict", "--checkpoint", p(&ck), "--top", "2", p(&big_jpg)]);
    assert_eq!(listed(&out, p(&big_jpg)).len(), 2, "{out}");
}

#[test]
fn bad_image_files_are_errors_naming_each_file_and_the_good_ones_still_get_classified() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10(&tmp.path().join("data"), 8, 1, None);
    let ck = tmp.path().join("ck.st");
    ok(&small(&[
        "--data-dir",
        p(&data),
        "--epochs",
        "1",
        "--save",
        p(&ck),
    ]));
    let good = tmp.path().join("good.png");
    image::RgbImage::from_pixel(50, 40, image::Rgb([200, 30, 30]))
        .save(&good)
        .unwrap();
    let text = tmp.path().join("notes.jpg");
    std::fs::write(&text, "not an image at all").unwrap();
    let truncated = tmp.path().join("cut.png");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    // The first third of a 640x480 JPEG with detail everywhere: the decoder alone filled in
    // the rest and classified it.
    let photo = image::RgbImage::from_fn(640, 480, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 251) as u8])
    });
    let mut jpeg = std::io::Cursor::new(Vec::new());
    photo.write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
    let jpeg = jpeg.into_inner();
    let cut_jpg = tmp.path().join("cut.jpg");
    std::fs::write(&cut_jpg, &jpeg[..jpeg.len() / 3]).unwrap();
    let gif = tmp.path().join("anim.gif");
    std::fs::write(&gif, b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").unwrap();
    let missing = tmp.path().join("missing.png");

    let out = train(&[
        "predict",
        "--checkpoint",
        p(&ck),
        p(&good),
        p(&text),
        p(&truncated),
        p(&cut_jpg),
        p(&gif),
        p(&missing),
    ]);
    let (stdout, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        listed(&stdout, p(&good)).len(),
        5,
        "the good file was not classified: {stdout}"
    );
    for (file, why) in [
        (&text, "not a PNG or JPEG file"),
        (&truncated, "truncated or damaged"),
        (&cut_jpg, "truncated or damaged"),
        (&gif, "not a PNG or JPEG file (it looks like Gif)"),
        (&missing, "No such file"),
    ] {
        let line = err
            .lines()
            .find(|l| l.contains(p(file)))
            .unwrap_or_else(|| panic!("{} not named: {err}", file.display()));
        assert!(line.contains(why), "{line}");
    }
    assert!(err.contains("5 of 6 images could not be read"), "{err}");
    // A checkpoint that is not one is named too.
    let err = fails(&["predict", "--checkpoint", p(&good), p(&good)]);
    assert!(
        err.contains("good.png") && err.contains("checkpoint"),
        "{err}"
    );
}
