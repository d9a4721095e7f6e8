//! A NaN or infinity never enters a run silently: a checkpoint holding one is refused by every
//! command that loads one (train --resume, eval, predict, reproduce), naming the tensor and the
//! count, with exit status 1 and the file left as it was.

use crate::common::*;
use std::path::Path;
use train::engine::checkpoint::{self, TensorData};

/// `from`'s tensors with `value` at index `at` of tensor `name`, written to `to`.
fn poison(from: &Path, to: &Path, name: &str, at: usize, value: f32) {
    let (mut tensors, meta) = checkpoint::from_bytes(&std::fs::read(from).unwrap()).unwrap();
    let t = tensors.iter_mut().find(|t| t.name == name).unwrap();
    let TensorData::F32(v) = &mut t.data else {
        panic!("{name} is not f32")
    };
    v[at] = value;
    checkpoint::save(to, &tensors, &meta).unwrap();
}

#[test]
fn a_checkpoint_with_a_nan_is_refused_by_every_command_naming_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10(&tmp.path().join("data"), 8, 1, None);
    let good = tmp.path().join("good.st");
    ok(&small(&[
        "--data-dir",
        p(&data),
        "--epochs",
        "1",
        "--save",
        p(&good),
    ]));
    // The case: one NaN in the first block's first convolution.
    let bad = tmp.path().join("bad.st");
    poison(&good, &bad, "layers.0.c1.weight", 5, f32::NAN);
    let before = std::fs::read(&bad).unwrap();
    let said = "`layers.0.c1.weight` has 1 NaN of its 144 values";
    let image = tmp.path().join("red.png");
    image::RgbImage::from_pixel(40, 30, image::Rgb([200, 30, 30]))
        .save(&image)
        .unwrap();

    let eval = ["eval", "--checkpoint", p(&bad), "--data-dir", p(&data)];
    let predict = ["predict", "--checkpoint", p(&bad), p(&image)];
    let resume = [
        "--resume",
        p(&bad),
        "--save",
        p(&bad),
        "--extend",
        "--epochs",
        "2",
        "--data-dir",
        p(&data),
        "--device",
        "cpu",
    ];
    for args in [&eval[..], &predict[..], &resume[..]] {
        let err = fails(args);
        assert!(err.contains(said) && err.contains("bad.st"), "{err}");
    }
    assert_eq!(
        std::fs::read(&bad).unwrap(),
        before,
        "the checkpoint changed"
    );
    // An infinity in a BN statistic, the same.
    poison(&good, &bad, "layers.2.b2.running_var", 0, f32::INFINITY);
    let err = fails(&eval);
    assert!(
        err.contains("`layers.2.b2.running_var` has 1 infinite of its 4 values"),
        "{err}"
    );

    // reproduce, continuing a run whose checkpoint was damaged since.
    let out = tmp.path().join("paper");
    let quick = |epochs| {
        vec![
            "reproduce",
            "--depths",
            "20",
            "--width",
            "4",
            "--epochs",
            epochs,
            "--data-dir",
            p(&data),
            "--out",
            p(&out),
            "--device",
            "cpu",
        ]
    };
    ok(&quick("1"));
    let run = out.join("cifar10/resnet20-seed0.safetensors");
    poison(&run, &run, "fc.bias", 3, f32::NAN);
    let err = fails(&quick("2"));
    assert!(
        err.contains("`fc.bias` has 1 NaN of its 10 values") && err.contains("resnet20-seed0"),
        "{err}"
    );
}

/// A NaN in any one tensor of a real checkpoint is refused by name (through the loader every
/// command uses; running the binary once per tensor would only cost time).
#[test]
fn a_nan_in_any_tensor_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10(&tmp.path().join("data"), 8, 1, None);
    let good = tmp.path().join("good.st");
    ok(&small(&[
        "--data-dir",
        p(&data),
        "--epochs",
        "1",
        "--save",
        p(&good),
    ]));
    let (tensors, _) = checkpoint::load(&good).unwrap();
    let floats: Vec<_> = tensors.iter().filter(|t| t.as_f32().is_some()).collect();
    // Weights, BN parameters and statistics, momentum buffers, the classifier.
    assert!(floats.len() > 100, "{} float tensors", floats.len());
    let bad = tmp.path().join("bad.st");
    for t in floats {
        let n = t.as_f32().unwrap().len();
        poison(&good, &bad, &t.name, n - 1, f32::NAN);
        let err = format!("{:#}", checkpoint::load(&bad).unwrap_err());
        let said = format!("`{}` has 1 NaN of its {n} values", t.name);
        assert!(err.contains(&said) && err.contains("bad.st"), "{err}");
    }
}
