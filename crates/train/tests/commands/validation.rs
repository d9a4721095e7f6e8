//! `--val-split N`: held out from the training files, reported each epoch beside test; the
//! result is the test accuracy of the best validation epoch, or without a split the last
//! epoch's test accuracy (and "best" is labelled as picked on the test set).

use crate::common::*;
use train::engine::checkpoint;

#[test]
fn a_validation_split_is_held_out_reported_and_chooses_the_result() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10(&tmp.path().join("data"), 24, 1, None);
    let (csv, ck, png) = (
        tmp.path().join("m.csv"),
        tmp.path().join("ck.st"),
        tmp.path().join("p.png"),
    );
    let out = ok(&small(&[
        "--data-dir",
        p(&data),
        "--epochs",
        "4",
        "--limit-train",
        "110",
        "--val-split",
        "30",
        "--metrics",
        p(&csv),
        "--save",
        p(&ck),
        "--plot",
        p(&png),
    ]));
    assert!(
        out.contains("80 train / 30 validation / 40 test images"),
        "{out}"
    );
    let epochs: Vec<&str> = out.lines().filter(|l| l.starts_with("epoch ")).collect();
    assert_eq!(epochs.len(), 4);
    assert!(
        epochs
            .iter()
            .all(|l| l.contains("val loss") && l.contains("test loss")),
        "{out}"
    );

    // The CSV has the validation columns; the result is the test accuracy at the first epoch
    // of best validation accuracy.
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(
        text.starts_with(
            "epoch,lr,train_loss,train_acc,test_loss,test_acc,val_loss,val_acc,seconds\n"
        ),
        "{text}"
    );
    let rows: Vec<Vec<f64>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|x| x.parse().unwrap()).collect())
        .collect();
    let best = rows
        .iter()
        .fold(&rows[0], |b, r| if r[7] > b[7] { r } else { b });
    let result = out.lines().find(|l| l.starts_with("done:")).unwrap();
    assert!(
        result.contains(&format!(
            "result: test accuracy {:.2}% at epoch {}",
            100.0 * best[5],
            best[0]
        )) && result.contains("the epoch of best validation accuracy"),
        "{result}\n{text}"
    );

    // The held-out images are the last 30 of the first 110, and the normalisation comes from
    // the 80 trained on only.
    let mut cifar = data::load(&data, data::Dataset::Cifar10).unwrap();
    cifar.train.truncate(110);
    let val = cifar.train.split_off(80);
    assert_eq!(val.len(), 30);
    let norm = data::Normalization::from_split(&cifar.train);
    let (_, meta) = checkpoint::load(&ck).unwrap();
    assert_eq!(
        train::engine::snapshot::norm_from_string(&meta["normalization"]).unwrap(),
        norm
    );
    // The checkpoint evaluated on exactly those 30 images gives the last epoch's validation
    // loss and accuracy.
    let (tensors, meta) = checkpoint::load(&ck).unwrap();
    let config = train::engine::state::config_from_metadata(&meta).unwrap();
    let mut net = model::ResNet::new(&config, 0);
    train::engine::state::load_model_tensors(&mut net, &tensors, false).unwrap();
    let r = train::engine::evaluate::evaluate(&mut net, &val, norm, 32, false).unwrap();
    let last = rows.last().unwrap();
    assert_eq!((r.loss, r.accuracy), (last[6], last[7]), "{text}");
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
}

#[test]
fn without_a_split_the_result_is_the_last_epoch_and_best_is_labelled() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10(&tmp.path().join("data"), 24, 1, None);
    let csv = tmp.path().join("m.csv");
    let out = ok(&small(&[
        "--data-dir",
        p(&data),
        "--epochs",
        "3",
        "--limit-train",
        "64",
        "--metrics",
        p(&csv),
    ]));
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(
        text.starts_with("epoch,lr,train_loss,train_acc,test_loss,test_acc,seconds\n"),
        "{text}"
    );
    let last: Vec<f64> = text
        .lines()
        .last()
        .unwrap()
        .split(',')
        .map(|x| x.parse().unwrap())
        .collect();
    let result = out.lines().find(|l| l.starts_with("done:")).unwrap();
    assert!(
        result.contains(&format!(
            "result: test accuracy {:.2}% (last epoch)",
            100.0 * last[5]
        )) && result.contains("best test accuracy over epochs")
            && result.contains("picked on the test set"),
        "{result}"
    );
    // A split must leave images to train on.
    let err = fails(&small(&[
        "--data-dir",
        p(&data),
        "--epochs",
        "1",
        "--limit-train",
        "64",
        "--val-split",
        "64",
    ]));
    assert!(
        err.contains("--val-split 64 leaves no training images") && err.contains("64"),
        "{err}"
    );
}
